import Foundation
import XCTest
@testable import AutoencoderCore

/// Outputs go through temp + rename only onto regular files or new paths; a special file is
/// written in place (when allowed) or refused, never replaced; a symlink's target is written.
final class AtomicFileTests: XCTestCase {
    func kind(_ p: String) -> mode_t { var st = stat(); return lstat(p, &st) == 0 ? st.st_mode & S_IFMT : 0 }

    func testRegularFilesAndNewPathsAreReplacedAtomically() throws {
        let dir = try TestFiles.tempDir(self, "af")
        let p = dir + "/a.bin"
        try AtomicFile.write(Data([1, 2, 3]), to: URL(fileURLWithPath: p))
        try AtomicFile.write(Data([4, 5]), to: URL(fileURLWithPath: p))
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: p))), [4, 5])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["a.bin"], "no temp file left")
    }

    func testSymlinkTargetIsWrittenAndTheLinkStays() throws {
        let dir = try TestFiles.tempDir(self, "af")
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: false)
        try Data([9]).write(to: URL(fileURLWithPath: dir + "/sub/real"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: "sub/real")
        try FileManager.default.createSymbolicLink(atPath: dir + "/link2", withDestinationPath: dir + "/link")
        try AtomicFile.write(Data([7, 7]), to: URL(fileURLWithPath: dir + "/link2"))
        XCTAssertEqual(kind(dir + "/link"), S_IFLNK)
        XCTAssertEqual(kind(dir + "/link2"), S_IFLNK)
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/sub/real"))), [7, 7])
        // A dangling link: its target is created.
        try FileManager.default.createSymbolicLink(atPath: dir + "/dangling", withDestinationPath: "sub/new")
        try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: dir + "/dangling"))
        XCTAssertEqual(kind(dir + "/dangling"), S_IFLNK)
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/sub/new"))), [1])
        // A loop is an error.
        try FileManager.default.createSymbolicLink(atPath: dir + "/loop", withDestinationPath: "loop")
        _ = assertAETError("loop", contains: [dir + "/loop: ", "too many levels"], exitCode: ExitCode.io) {
            try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: dir + "/loop"))
        }
    }

    func testFIFOIsWrittenInPlaceOrRefusedNeverReplaced() throws {
        let dir = try TestFiles.tempDir(self, "af")
        let fifo = dir + "/out.npy"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        _ = assertAETError("refused", contains: [fifo + ": ", "FIFO", "refusing to replace it"], exitCode: ExitCode.io) {
            try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: fifo))
        }
        XCTAssertEqual(kind(fifo), S_IFIFO)
        _ = assertAETError("no reader", contains: [fifo + ": ", "no reader"], exitCode: ExitCode.io) {
            try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: fifo), special: .writeInPlace)
        }
        let rfd = open(fifo, O_RDONLY | O_NONBLOCK)
        XCTAssertGreaterThanOrEqual(rfd, 0)
        defer { close(rfd) }
        try AtomicFile.write(Data([5, 6, 7]), to: URL(fileURLWithPath: fifo), special: .writeInPlace)
        var buf = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(read(rfd, &buf, 16), 3)
        XCTAssertEqual(Array(buf.prefix(3)), [5, 6, 7])
        XCTAssertEqual(kind(fifo), S_IFIFO)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["out.npy"])
    }

    func testDevicesDirectoriesAndProcLinks() throws {
        let dir = try TestFiles.tempDir(self, "af")
        // A character device: refused unless in place is allowed; never replaced. As root this is
        // a private null device node in the temp folder, so that a regression cannot replace the
        // system's /dev/null; without root /dev/null itself cannot be replaced anyway.
        var null = "/dev/null"
        if getuid() == 0 {
            null = dir + "/null"
            XCTAssertEqual(mknod(null, S_IFCHR | 0o666, dev_t(1 << 8 | 3)), 0)  // makedev(1, 3)
        }
        _ = assertAETError("device refused", contains: [null + ": ", "character device"], exitCode: ExitCode.io) {
            try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: null))
        }
        XCTAssertEqual(kind(null), S_IFCHR)
        try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: null), special: .writeInPlace)
        XCTAssertEqual(kind(null), S_IFCHR)
        _ = assertAETError("directory", contains: [dir + ": ", "is a directory"], exitCode: ExitCode.io) {
            try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: dir), special: .writeInPlace)
        }
        // A link into /proc (as /dev/stdout is) reaches a descriptor this process holds: a pipe here.
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let link = dir + "/stdout-like"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/proc/self/fd/\(fds[1])")
        XCTAssertTrue(AtomicFile.isSpecial(link))
        _ = assertAETError("proc link refused", contains: [link + ": ", "/proc"], exitCode: ExitCode.io) {
            try AtomicFile.write(Data([1]), to: URL(fileURLWithPath: link))
        }
        try AtomicFile.write(Data([42, 43]), to: URL(fileURLWithPath: link), special: .writeInPlace)
        var buf = [UInt8](repeating: 0, count: 4)
        XCTAssertEqual(read(fds[0], &buf, 4), 2)
        XCTAssertEqual(Array(buf.prefix(2)), [42, 43])
        XCTAssertEqual(kind(link), S_IFLNK)
        // A regular file behind a /proc link (stdout redirected to a file) is appended in place,
        // not replaced by a new inode the descriptor would never see.
        let file = dir + "/redirected"
        let wfd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(wfd) }
        let plink = dir + "/proc-file"
        try FileManager.default.createSymbolicLink(atPath: plink, withDestinationPath: "/proc/self/fd/\(wfd)")
        try AtomicFile.write(Data([1, 2]), to: URL(fileURLWithPath: plink), special: .writeInPlace)
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: file))), [1, 2])
        XCTAssertFalse(AtomicFile.isSpecial(dir + "/new-file"))
    }
}
