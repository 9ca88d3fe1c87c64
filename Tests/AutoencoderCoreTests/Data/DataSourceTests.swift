import Foundation
import XCTest
@testable import AutoencoderCore

final class DataSourceTests: XCTestCase {
    /// Runs the test body in a fresh current directory (for the ./data candidate); restores it.
    func inTempCurrentDirectory() throws -> String {
        let dir = try TestFiles.tempDir(self, "cwd")
        let old = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(dir))
        addTeardownBlock { _ = FileManager.default.changeCurrentDirectoryPath(old) }
        return dir
    }

    func touch(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data([0x1f, 0x8b])))
    }

    func listing(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
    }

    // MARK: resolution

    func testResolutionOrderMNIST() throws {
        let cwd = try inTempCurrentDirectory()
        let root = try TestFiles.tempDir(self, "root")
        let explicit = try TestFiles.tempDir(self, "explicit")  // empty: --data-dir is taken as given
        let env = ["AETRAIN_DATA_DIR": root]
        try touch(root + "/mnist/train-images-idx3-ubyte.gz")
        try touch(cwd + "/data/mnist/train-images-idx3-ubyte.gz")

        XCTAssertEqual(DataSource.candidates(.mnist, dataDir: nil, env: env), [root + "/mnist", "./data/mnist"])
        XCTAssertEqual(DataSource.candidates(.mnist, dataDir: explicit, env: env), [explicit])
        // 1. --data-dir wins over everything.
        XCTAssertEqual(try DataSource.resolve(.mnist, dataDir: explicit, env: env), explicit)
        // 2. $AETRAIN_DATA_DIR/<dataset> next.
        XCTAssertEqual(try DataSource.resolve(.mnist, dataDir: nil, env: env), root + "/mnist")
        // 3. ./data/<dataset> when the environment's directory lacks the files, or is unset/empty.
        try FileManager.default.removeItem(atPath: root + "/mnist/train-images-idx3-ubyte.gz")
        XCTAssertEqual(try DataSource.resolve(.mnist, dataDir: nil, env: env), "./data/mnist")
        XCTAssertEqual(try DataSource.resolve(.mnist, dataDir: nil, env: [:]), "./data/mnist")
        XCTAssertEqual(try DataSource.resolve(.mnist, dataDir: nil, env: ["AETRAIN_DATA_DIR": ""]), "./data/mnist")
        // An uncompressed training-images file counts too.
        try touch(root + "/mnist/train-images-idx3-ubyte")
        XCTAssertEqual(try DataSource.resolve(.mnist, dataDir: nil, env: env), root + "/mnist")
    }

    func testResolutionOrderFashion() throws {
        let cwd = try inTempCurrentDirectory()
        let root = try TestFiles.tempDir(self, "root")
        let env = ["AETRAIN_DATA_DIR": root]
        XCTAssertEqual(DataSource.candidates(.fashionMNIST, dataDir: nil, env: env),
                       [root + "/fashion-mnist", "/usr/share/datasets/fashion-mnist", "./data/fashion-mnist"])
        XCTAssertEqual(DataSource.candidates(.fashionMNIST, dataDir: nil, env: [:]),
                       ["/usr/share/datasets/fashion-mnist", "./data/fashion-mnist"])
        try touch(root + "/fashion-mnist/train-images-idx3-ubyte.gz")
        try touch(cwd + "/data/fashion-mnist/train-images-idx3-ubyte.gz")
        XCTAssertEqual(try DataSource.resolve(.fashionMNIST, dataDir: nil, env: env), root + "/fashion-mnist")
        // The Debian package comes before ./data.
        let debian = try TestFiles.fashionDir()
        XCTAssertEqual(try DataSource.resolve(.fashionMNIST, dataDir: nil, env: [:]), debian)
        XCTAssertEqual(try DataSource.resolve(.fashionMNIST, dataDir: nil, env: ["AETRAIN_DATA_DIR": root + "/elsewhere"]), debian)
    }

    func testNotFoundNamesEveryPath() throws {
        _ = try inTempCurrentDirectory()
        let root = try TestFiles.tempDir(self, "root")
        assertAETError("mnist not found", contains: [root + "/mnist", "./data/mnist", "aetrain fetch mnist", "--data-dir"],
                       exitCode: ExitCode.badInput) {
            _ = try DataSource.resolve(.mnist, dataDir: nil, env: ["AETRAIN_DATA_DIR": root])
        }
        assertAETError("mnist not found, no env", contains: ["./data/mnist", "aetrain fetch mnist"]) {
            _ = try DataSource.resolve(.mnist, dataDir: nil, env: [:])
        }
        // A directory present but without the training images is not a hit.
        try touch(root + "/mnist/t10k-images-idx3-ubyte.gz")
        assertAETError("mnist without train images", contains: [root + "/mnist"]) {
            _ = try DataSource.resolve(.mnist, dataDir: nil, env: ["AETRAIN_DATA_DIR": root])
        }
        if !FileManager.default.fileExists(atPath: DataSource.debianFashionDir + "/train-images-idx3-ubyte.gz") {
            assertAETError("fashion not found", contains: [root + "/fashion-mnist", DataSource.debianFashionDir,
                                                           "./data/fashion-mnist", "apt-get install dataset-fashion-mnist"]) {
                _ = try DataSource.resolve(.fashionMNIST, dataDir: nil, env: ["AETRAIN_DATA_DIR": root])
            }
        }
    }

    func testDataDirErrors() throws {
        let root = try TestFiles.tempDir(self, "root")
        let file = root + "/afile"
        try touch(file)
        assertAETError("--data-dir file", contains: ["--data-dir", file, "is a file"], exitCode: ExitCode.badInput) {
            _ = try DataSource.resolve(.mnist, dataDir: file, env: [:])
        }
        assertAETError("--data-dir missing", contains: ["--data-dir", root + "/missing", "no such directory"]) {
            _ = try DataSource.resolve(.mnist, dataDir: root + "/missing", env: ["AETRAIN_DATA_DIR": root])
        }
    }

    // MARK: digests

    func testContentDigestIgnoresCompression() throws {
        let dir = try TestFiles.tempDir(self, "digest")
        let bytes = TestFiles.idxLabels([1, 2, 3, 4])
        try TestFiles.write(bytes, to: dir + "/raw")
        try TestFiles.writeGzip(bytes, to: dir + "/a.gz")
        try TestFiles.writeGzip(bytes, to: dir + "/b.gz", level: 1)
        let raw = try DataSource.contentDigest(path: dir + "/raw")
        XCTAssertEqual(raw.count, 64)
        XCTAssertEqual(try DataSource.contentDigest(path: dir + "/a.gz"), raw)
        XCTAssertEqual(try DataSource.contentDigest(path: dir + "/b.gz"), raw)
        // SHA-256 of the empty string is a fixed, well-known value; of "abc" too (FIPS 180-2).
        try TestFiles.write(Array("abc".utf8), to: dir + "/abc")
        XCTAssertEqual(try DataSource.contentDigest(path: dir + "/abc"),
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Digest.hex(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        assertAETError("unknown name", contains: [dir + "/raw", "unknown file name"]) {
            try DataSource.verify(.mnist, file: "nonsense", path: dir + "/raw")
        }
        assertAETError("wrong content", contains: [dir + "/raw", "SHA-256", raw, "mnist t10k-labels-idx1-ubyte",
                                                   DatasetName.mnist.contentSHA256["t10k-labels-idx1-ubyte"]!]) {
            try DataSource.verify(.mnist, file: "t10k-labels-idx1-ubyte", path: dir + "/raw")
        }
    }

    // MARK: fetch

    func testFetchFromFileMirrorVerifiesAndWritesAtomically() throws {
        let src = try TestFiles.mnistDir()
        let dest = try TestFiles.tempDir(self, "fetch") + "/mnist"
        var log: [String] = []
        try DataSource.fetch(.mnist, into: dest, mirror: "file://" + src + "/", log: { log.append($0) })
        XCTAssertEqual(try listing(dest), DatasetName.fileNames.map { $0 + ".gz" }.sorted(), "leftover temp files?")
        for name in DatasetName.fileNames {
            let p = dest + "/" + name + ".gz"
            XCTAssertNoThrow(try DataSource.verify(.mnist, file: name, path: p))
            XCTAssertEqual(FileManager.default.contents(atPath: p), FileManager.default.contents(atPath: src + "/" + name + ".gz"))
        }
        XCTAssertEqual(log.count, 4)
        XCTAssertTrue(log.allSatisfy { $0.contains("downloaded from file://") && $0.contains("checksum ok") }, "\(log)")
        // The fetched directory loads.
        let d = try IDX.load(dir: dest, split: .test, limit: 10)
        XCTAssertEqual(d.labels.prefix(3), [7, 2, 1])
        // A second fetch finds everything present and verified (mirror without trailing slash).
        log = []
        try DataSource.fetch(.mnist, into: dest, mirror: "file://" + src, log: { log.append($0) })
        XCTAssertEqual(log.count, 4)
        XCTAssertTrue(log.allSatisfy { $0.contains("present, checksum ok") }, "\(log)")
    }

    /// A mirror directory holding symlinks to the real files, with `name` replaced by `bytes`.
    func mirror(replacing name: String, with bytes: [UInt8]?) throws -> String {
        let src = try TestFiles.mnistDir()
        let m = try TestFiles.tempDir(self, "mirror")
        for n in DatasetName.fileNames where n != name {
            try FileManager.default.createSymbolicLink(atPath: m + "/" + n + ".gz", withDestinationPath: src + "/" + n + ".gz")
        }
        if let bytes { try TestFiles.write(bytes, to: m + "/" + name + ".gz") }
        return m
    }

    func testFetchRejectsCorruptedMirrorFile() throws {
        let src = try TestFiles.mnistDir()
        let scratch = try TestFiles.tempDir(self, "scratch")
        // Decompress the training labels, change one label, recompress: a valid gzip of valid
        // IDX data whose content differs by one byte.
        var labels = try TestFiles.gunzip(src + "/train-labels-idx1-ubyte.gz")
        labels[8 + 1234] = (labels[8 + 1234] + 1) % 10
        let m = try mirror(replacing: "train-labels-idx1-ubyte", with: try TestFiles.gzipData(labels, in: scratch))
        let dest = try TestFiles.tempDir(self, "fetch")
        var log: [String] = []
        assertAETError("one flipped byte", contains: ["fetch mnist", "train-labels-idx1-ubyte", "SHA-256",
                                                      DatasetName.mnist.contentSHA256["train-labels-idx1-ubyte"]!],
                       exitCode: ExitCode.io) {
            try DataSource.fetch(.mnist, into: dest, mirror: "file://" + m + "/", log: { log.append($0) })
        }
        // The good file before it was kept; the bad one and every temp file are gone.
        XCTAssertEqual(try listing(dest), ["train-images-idx3-ubyte.gz"])
        XCTAssertEqual(log.count, 1)
    }

    func testFetchRejectsTruncatedMirrorFile() throws {
        let src = try TestFiles.mnistDir()
        let gz = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src + "/t10k-labels-idx1-ubyte.gz")))
        let m = try mirror(replacing: "t10k-labels-idx1-ubyte", with: Array(gz.prefix(gz.count / 2)))
        let dest = try TestFiles.tempDir(self, "fetch")
        let msg = assertAETError("truncated", contains: ["fetch mnist", "t10k-labels-idx1-ubyte"], exitCode: ExitCode.io) {
            try DataSource.fetch(.mnist, into: dest, mirror: "file://" + m, log: { _ in })
        }
        if let msg { XCTAssertTrue(msg.contains("SHA-256") || msg.contains("corrupt gzip") || msg.contains("truncated"), msg) }
        XCTAssertEqual(try listing(dest), ["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
        // A file missing from the mirror names the URL.
        let m2 = try mirror(replacing: "t10k-images-idx3-ubyte", with: nil)
        let dest2 = try TestFiles.tempDir(self, "fetch")
        // Pre-seed the first two files so only the missing one is attempted.
        for n in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
            try FileManager.default.copyItem(atPath: src + "/" + n + ".gz", toPath: dest2 + "/" + n + ".gz")
        }
        assertAETError("missing in mirror", contains: ["file://" + m2 + "/t10k-images-idx3-ubyte.gz", "by hand"]) {
            try DataSource.fetch(.mnist, into: dest2, mirror: "file://" + m2, log: { _ in })
        }
    }

    /// A download cut inside the gzip trailer (CRC-32 + length) inflates to the full, correct
    /// content, so its digest matches; but the file kept is a truncated gzip (which the IDX
    /// reader must reject, see IDXTests.testGzipCutInsideTrailerIsRejected). Fetch must not
    /// accept it.
    func testFetchRejectsGzipCutInsideTrailer() throws {
        let src = try TestFiles.mnistDir()
        let gz = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src + "/t10k-labels-idx1-ubyte.gz")))
        let m = try mirror(replacing: "t10k-labels-idx1-ubyte", with: Array(gz.dropLast(4)))
        let dest = try TestFiles.tempDir(self, "fetch")
        for n in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"] {
            try FileManager.default.copyItem(atPath: src + "/" + n + ".gz", toPath: dest + "/" + n + ".gz")
        }
        assertAETError("gzip missing 4 trailer bytes", contains: ["fetch mnist", "t10k-labels-idx1-ubyte"], exitCode: ExitCode.io) {
            try DataSource.fetch(.mnist, into: dest, mirror: "file://" + m, log: { _ in })
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest + "/t10k-labels-idx1-ubyte.gz"))
        let left = try listing(dest)
        XCTAssertEqual(left.count, 3, "leftover files: \(left)")
    }

    func testFetchReplacesDamagedLocalFile() throws {
        let src = try TestFiles.mnistDir()
        let dest = try TestFiles.tempDir(self, "fetch")
        for n in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"] {
            try FileManager.default.copyItem(atPath: src + "/" + n + ".gz", toPath: dest + "/" + n + ".gz")
        }
        try TestFiles.write(Array("garbage".utf8), to: dest + "/t10k-labels-idx1-ubyte.gz")
        var log: [String] = []
        try DataSource.fetch(.mnist, into: dest, mirror: "file://" + src, log: { log.append($0) })
        XCTAssertNoThrow(try DataSource.verify(.mnist, file: "t10k-labels-idx1-ubyte", path: dest + "/t10k-labels-idx1-ubyte.gz"))
        XCTAssertEqual(log.filter { $0.contains("present") }.count, 3, "\(log)")
        XCTAssertEqual(try listing(dest), DatasetName.fileNames.map { $0 + ".gz" }.sorted())
    }

    func testFetchUnreachableMirror() throws {
        let dest = try TestFiles.tempDir(self, "fetch") + "/mnist"
        assertAETError("mnist offline", contains: ["fetch mnist", "http://127.0.0.1:9/train-images-idx3-ubyte.gz",
                                                   "copy the four .gz files", dest], exitCode: ExitCode.io) {
            try DataSource.fetch(.mnist, into: dest, mirror: "http://127.0.0.1:9/", log: { _ in })
        }
        XCTAssertEqual(try listing(dest), [])
        let fdest = try TestFiles.tempDir(self, "fetch") + "/fashion"
        assertAETError("fashion offline", contains: ["fetch fashion-mnist", "http://127.0.0.1:9/train-images-idx3-ubyte.gz",
                                                     "apt-get install dataset-fashion-mnist", fdest], exitCode: ExitCode.io) {
            try DataSource.fetch(.fashionMNIST, into: fdest, mirror: "http://127.0.0.1:9", log: { _ in })
        }
        XCTAssertEqual(try listing(fdest), [])
    }

    func testBuiltInDigestsMatchFashionPackage() throws {
        // The Debian package's files (re-compressed upstream files) verify against the table.
        let dir = try TestFiles.fashionDir()
        for name in ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"] {
            XCTAssertNoThrow(try DataSource.verify(.fashionMNIST, file: name, path: dir + "/" + name + ".gz"))
        }
        // And MNIST's do not verify as Fashion-MNIST.
        let mnist = try TestFiles.mnistDir()
        assertAETError("cross-dataset", contains: ["SHA-256", "fashion-mnist"]) {
            try DataSource.verify(.fashionMNIST, file: "t10k-labels-idx1-ubyte", path: mnist + "/t10k-labels-idx1-ubyte.gz")
        }
    }
}
