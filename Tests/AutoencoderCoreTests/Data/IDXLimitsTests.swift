import Foundation
import XCTest
@testable import AutoencoderCore

/// Sizes from a header are checked against the file before anything is allocated, only regular
/// files are opened, an empty split is an error, and the other known dataset's files are named.
final class IDXLimitsTests: XCTestCase {
    func testGzipClaimBeyondWhatDeflateCanHoldFailsBeforeReading() throws {
        let dir = try TestFiles.tempDir(self, "lim")
        // 60,000 images claimed; the gzip stream holds 1 MB of zeros (about 1 KB compressed).
        let p = dir + "/train-images-idx3-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.be32(0x803) + TestFiles.be32(60000) + TestFiles.be32(28) + TestFiles.be32(28)
                                + [UInt8](repeating: 0, count: 1 << 20), to: p, level: 9)
        let size = try FileManager.default.attributesOfItem(atPath: p)[.size] as! Int
        XCTAssertLessThan(size * IDX.maxDeflateRatio, 16 + 60000 * 784)
        assertAETError("over-claiming gzip", contains: [p + ": ", "60000 images", "\(size)-byte gzip file can hold"],
                       exitCode: ExitCode.badInput) { _ = try IDX.readImages(p) }
        // Within deflate's bound, the claim is read with a growing buffer and fails at the real end.
        let q = dir + "/t10k-images-idx3-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.be32(0x803) + TestFiles.be32(100) + TestFiles.be32(28) + TestFiles.be32(28)
                                + (0 ..< 30 * 784).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }, to: q)
        assertAETError("short gzip", contains: [q + ": ", "truncated", "expected \(16 + 100 * 784)"]) { _ = try IDX.readImages(q) }
    }

    func testRawFileLengthMustMatchTheHeaderBeforeAllocating() throws {
        let dir = try TestFiles.tempDir(self, "lim")
        let p = dir + "/bomb-images-idx3-ubyte"
        try TestFiles.write(TestFiles.be32(0x803) + TestFiles.be32(99_999_999) + TestFiles.be32(28) + TestFiles.be32(28)
                            + [UInt8](repeating: 0, count: 84), to: p)
        assertAETError("78 GB claim", contains: [p + ": ", "truncated: 100 bytes", "expected \(16 + 99_999_999 * 784)"]) {
            _ = try IDX.readImages(p)
        }
        let l = dir + "/bomb-labels-idx1-ubyte"
        try TestFiles.write(TestFiles.be32(0x801) + TestFiles.be32(99_999_999) + [1, 2], to: l)
        assertAETError("label claim", contains: [l + ": ", "truncated: 10 bytes"]) { _ = try IDX.readLabels(l) }
        // The same with a limit: the whole file is still checked.
        assertAETError("label claim with limit", contains: [l + ": ", "truncated"]) { _ = try IDX.readLabels(l, limit: 1) }
    }

    func testCountMismatchIsFoundBeforeTheImagesAreRead() throws {
        let dir = try TestFiles.tempDir(self, "lim")
        try TestFiles.writeGzip(TestFiles.idxLabels([1, 2]), to: dir + "/train-labels-idx1-ubyte.gz")
        // The image file claims 5 images and holds 1: a read would say "truncated".
        try TestFiles.write(Array(TestFiles.idxImages(count: 5).prefix(16 + 784)), to: dir + "/train-images-idx3-ubyte")
        assertAETError("mismatch first", contains: ["2 labels", "5 images"]) { _ = try IDX.load(dir: dir, split: .train) }
    }

    func testEmptySplitIsAnInputError() throws {
        let dir = try TestFiles.tempDir(self, "lim")
        try TestFiles.writeGzip(TestFiles.idxLabels([]), to: dir + "/t10k-labels-idx1-ubyte.gz")
        try TestFiles.writeGzip(TestFiles.idxImages(count: 0), to: dir + "/t10k-images-idx3-ubyte.gz")
        assertAETError("empty split", contains: [dir + "/t10k-images-idx3-ubyte.gz: ", "no images", "test split"],
                       exitCode: ExitCode.badInput) { _ = try IDX.load(dir: dir, split: .test) }
        // Reading the files alone is fine (a zero count is not a format error).
        XCTAssertEqual(try IDX.readImages(dir + "/t10k-images-idx3-ubyte.gz").0, 0)
    }

    func testOnlyRegularFilesAreOpenedAndAFIFONeverBlocks() throws {
        let dir = try TestFiles.tempDir(self, "lim")
        let fifo = dir + "/train-images-idx3-ubyte.gz"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let t0 = Date()
        assertAETError("FIFO", contains: [fifo + ": ", "is a FIFO", "not a regular file"], exitCode: ExitCode.badInput) {
            _ = try IDX.readImages(fifo)
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        // locate finds it (it exists); opening it decides.
        XCTAssertEqual(try IDX.locate("train-images-idx3-ubyte", in: dir), fifo)
        let sub = dir + "/t10k-labels-idx1-ubyte"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
        assertAETError("directory", contains: [sub + ": ", "is a directory"]) { _ = try IDX.readLabels(sub) }
        assertAETError("device", contains: ["/dev/zero: ", "is a character device"]) { _ = try IDX.readLabels("/dev/zero") }
        let link = dir + "/link-labels-idx1-ubyte"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/dev/null")
        assertAETError("link to a device", contains: [link + ": ", "is a character device"]) { _ = try IDX.readLabels(link) }
        assertAETError("missing", contains: [dir + "/nope: file not found"]) { _ = try IDX.readLabels(dir + "/nope") }
        // A symlink to a regular file is read.
        let real = dir + "/real-labels-idx1-ubyte", ok = dir + "/ok-labels-idx1-ubyte"
        try TestFiles.write(TestFiles.idxLabels([3, 1]), to: real)
        try FileManager.default.createSymbolicLink(atPath: ok, withDestinationPath: real)
        XCTAssertEqual(try IDX.readLabels(ok).1, [3, 1])
    }

    func testTheOtherKnownDatasetIsNamedOncePerFolder() throws {
        let mnist = try TestFiles.mnistDir()
        var got: [String] = []
        let saved = IDX.warn
        IDX.warn = { got.append($0) }
        defer { IDX.warn = saved; IDX.warned.removeAll() }
        IDX.warned.removeAll()
        _ = try IDX.load(dir: mnist, split: .test, limit: 10, name: "fashion-mnist")
        _ = try IDX.load(dir: mnist, split: .train, limit: 10, name: "fashion-mnist")
        XCTAssertEqual(got.count, 1, "\(got)")
        XCTAssertTrue(got.first?.contains("is mnist") == true && got.first?.contains("--dataset is fashion-mnist") == true, "\(got)")
        got = []
        IDX.warned.removeAll()
        _ = try IDX.load(dir: mnist, split: .test, limit: 10, name: "mnist")
        XCTAssertEqual(got, [])
        // Unknown content of the right shape (another IDX set) loads without a word.
        let dir = try TestFiles.tempDir(self, "lim")
        try TestFiles.writeGzip(TestFiles.idxImages(count: 3), to: dir + "/t10k-images-idx3-ubyte.gz")
        try TestFiles.writeGzip(TestFiles.idxLabels([1, 2, 3]), to: dir + "/t10k-labels-idx1-ubyte.gz")
        XCTAssertEqual(try IDX.load(dir: dir, split: .test, name: "mnist").count, 3)
        XCTAssertEqual(got, [])
    }
}
