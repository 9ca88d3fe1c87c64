import CZlib
import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Helpers shared by the data tests (IDXTests, DataSourceTests): temp dirs, gzip through zlib,
/// synthetic IDX files, locating the real datasets, and AETError assertions.
enum TestFiles {
    /// A fresh temp directory, removed when the test ends.
    static func tempDir(_ tc: XCTestCase, _ tag: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("aet-\(tag)-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        tc.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Writes `bytes` gzip-compressed through zlib's gzwrite.
    static func writeGzip(_ bytes: [UInt8], to path: String, level: Int = 6) throws {
        guard let f = gzopen(path, "wb\(level)") else { throw AETError("gzopen \(path) failed") }
        var written: Int32 = 0
        if !bytes.isEmpty {
            written = bytes.withUnsafeBytes { gzwrite(f, $0.baseAddress, UInt32($0.count)) }
        }
        let rc = gzclose(f)
        guard Int(written) == bytes.count, rc == Z_OK else { throw AETError("gzwrite \(path) failed") }
    }

    /// The gzip encoding of `bytes` (via a temp file).
    static func gzipData(_ bytes: [UInt8], in dir: String) throws -> [UInt8] {
        let p = (dir as NSString).appendingPathComponent("scratch-\(UUID().uuidString).gz")
        try writeGzip(bytes, to: p)
        defer { unlink(p) }
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
    }

    /// Decompresses a gzip (or raw) file completely through zlib, independently of the reader.
    static func gunzip(_ path: String) throws -> [UInt8] {
        guard let f = gzopen(path, "rb") else { throw AETError("gzopen \(path) failed") }
        defer { gzclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let got = buf.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
            if got < 0 { throw AETError("gzread \(path) failed") }
            if got == 0 { break }
            out.append(contentsOf: buf[0..<Int(got)])
        }
        return out
    }

    static func be32(_ v: Int) -> [UInt8] {
        let u = UInt32(truncatingIfNeeded: v)
        return [UInt8(u >> 24), UInt8((u >> 16) & 0xff), UInt8((u >> 8) & 0xff), UInt8(u & 0xff)]
    }

    /// An IDX3 image file: magic 0x803, then count, rows, cols, then the pixels.
    static func idxImages(count: Int, rows: Int = 28, cols: Int = 28, pixels: [UInt8]? = nil,
                          magic: Int = 0x803) -> [UInt8] {
        let px = pixels ?? (0..<(count * rows * cols)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        return be32(magic) + be32(count) + be32(rows) + be32(cols) + px
    }

    /// An IDX1 label file: magic 0x801, then count, then the labels.
    static func idxLabels(_ labels: [UInt8], count: Int? = nil, magic: Int = 0x801) -> [UInt8] {
        be32(magic) + be32(count ?? labels.count) + labels
    }

    /// The real MNIST directory: $AETRAIN_MNIST_DIR, else <repo>/data/mnist (where
    /// `aetrain fetch mnist` puts it). A test that needs it fails when neither holds the files.
    static func mnistDir() throws -> String {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["AETRAIN_MNIST_DIR"], !env.isEmpty { candidates.append(env) }
        candidates.append(repo.appendingPathComponent("data/mnist").path)
        for c in candidates where FileManager.default.fileExists(atPath: c + "/train-labels-idx1-ubyte.gz") {
            return c
        }
        throw TestFailure("MNIST not found (tried \(candidates.joined(separator: ", "))): set AETRAIN_MNIST_DIR to a folder "
                          + "with the four MNIST .gz files, or run Launch/test.sh, which finds or fetches them")
    }

    static func fashionDir() throws -> String {
        let d = DataSource.debianFashionDir
        guard FileManager.default.fileExists(atPath: d + "/train-labels-idx1-ubyte.gz") else {
            throw TestFailure("Fashion-MNIST not installed at \(d) (apt-get install dataset-fashion-mnist; Launch/test.sh does)")
        }
        return d
    }
}

/// Asserts that `body` throws an AETError whose one-line message contains every string in
/// `contains`; returns the message.
@discardableResult
func assertAETError(_ what: String, contains: [String], exitCode: Int32? = nil,
                    file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) -> String? {
    do {
        try body()
        XCTFail("\(what): no error thrown", file: file, line: line)
        return nil
    } catch let e as AETError {
        for s in contains {
            XCTAssertTrue(e.message.contains(s), "\(what): '\(e.message)' lacks '\(s)'", file: file, line: line)
        }
        XCTAssertFalse(e.message.contains("\n"), "\(what): message is not one line: \(e.message)", file: file, line: line)
        if let exitCode { XCTAssertEqual(e.exitCode, exitCode, "\(what): exit code", file: file, line: line) }
        return e.message
    } catch {
        XCTFail("\(what): not an AETError: \(error)", file: file, line: line)
        return nil
    }
}

final class IDXTests: XCTestCase {
    // MARK: real data

    func testRealMNISTLoads() throws {
        let dir = try TestFiles.mnistDir()
        let train = try IDX.load(dir: dir, split: .train, name: "mnist")
        let test = try IDX.load(dir: dir, split: .test, name: "mnist")
        XCTAssertEqual(train.count, 60000)
        XCTAssertEqual(test.count, 10000)
        for d in [train, test] {
            XCTAssertEqual(d.rows, 28)
            XCTAssertEqual(d.cols, 28)
            XCTAssertEqual(d.pixels.count, d.count * 784)
            XCTAssertEqual(d.labels.count, d.count)
        }
        XCTAssertEqual(train.labels[0], 5)
        XCTAssertEqual(test.labels[0], 7)
        // Published MNIST class counts.
        func histogram(_ l: [UInt8]) -> [Int] {
            var h = [Int](repeating: 0, count: 10)
            for v in l { h[Int(v)] += 1 }  // traps if a label is > 9
            return h
        }
        XCTAssertEqual(histogram(train.labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
        XCTAssertEqual(histogram(test.labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
        // Pixels of the first training image ("5") match an independent zlib decompression.
        let raw = try TestFiles.gunzip(dir + "/train-images-idx3-ubyte.gz")
        XCTAssertEqual(raw.count, 16 + 60000 * 784)
        XCTAssertEqual(Array(train.pixels[0..<784]), Array(raw[16..<(16 + 784)]))
        XCTAssertEqual(Array(train.pixels[(59999 * 784)...]), Array(raw[(16 + 59999 * 784)...]))
        XCTAssertEqual(train.pixels[0..<784].reduce(0) { $0 + Int($1) }, 27525)
    }

    func testRealMNISTLimitAndFashion() throws {
        let dir = try TestFiles.mnistDir()
        let d = try IDX.load(dir: dir, split: .test, limit: 100)
        XCTAssertEqual(d.count, 100)
        XCTAssertEqual(d.pixels.count, 100 * 784)
        XCTAssertEqual(Array(d.labels.prefix(5)), [7, 2, 1, 0, 4])
        let fdir = try TestFiles.fashionDir()
        let f = try IDX.load(dir: fdir, split: .test, name: "fashion-mnist")
        XCTAssertEqual(f.count, 10000)
        XCTAssertEqual(f.labels[0], 9)
        for c in 0..<10 { XCTAssertEqual(f.labels.filter { $0 == c }.count, 1000, "class \(c)") }
    }

    // MARK: synthetic files, valid

    func testSyntheticRawAndGzipRoundTrip() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let img = TestFiles.idxImages(count: 5)
        let lbl = TestFiles.idxLabels([3, 1, 4, 1, 5])
        for gz in [false, true] {
            let sub = dir + (gz ? "/gz" : "/raw")
            try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
            for (base, bytes) in [("t10k-images-idx3-ubyte", img), ("t10k-labels-idx1-ubyte", lbl)] {
                if gz { try TestFiles.writeGzip(bytes, to: sub + "/" + base + ".gz") } else { try TestFiles.write(bytes, to: sub + "/" + base) }
            }
            let d = try IDX.load(dir: sub, split: .test)
            XCTAssertEqual(d.count, 5, "gz=\(gz)")
            XCTAssertEqual(d.pixels, Array(img[16...]), "gz=\(gz)")
            XCTAssertEqual(d.labels, [3, 1, 4, 1, 5], "gz=\(gz)")
        }
    }

    func testLocatePrefersGzAndNamesMissingFile() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        try TestFiles.write(TestFiles.idxLabels([1]), to: dir + "/t10k-labels-idx1-ubyte")
        XCTAssertEqual(try IDX.locate("t10k-labels-idx1-ubyte", in: dir), dir + "/t10k-labels-idx1-ubyte")
        try TestFiles.writeGzip(TestFiles.idxLabels([2]), to: dir + "/t10k-labels-idx1-ubyte.gz")
        XCTAssertEqual(try IDX.locate("t10k-labels-idx1-ubyte", in: dir), dir + "/t10k-labels-idx1-ubyte.gz")
        // The images are missing: load names the file it looked for.
        assertAETError("missing images", contains: [dir + "/t10k-images-idx3-ubyte", "not found"], exitCode: ExitCode.badInput) {
            _ = try IDX.load(dir: dir, split: .test)
        }
        assertAETError("missing path", contains: [dir + "/nope.gz", "file not found"], exitCode: ExitCode.badInput) {
            _ = try IDX.readLabels(dir + "/nope.gz")
        }
    }

    // MARK: synthetic files, every error case, raw and gzip

    /// Writes `bytes` raw and gzipped, reads each with `read`, and checks the error names the
    /// path and every `cause` string.
    func expectBoth(_ what: String, _ bytes: [UInt8], labels: Bool, contains cause: [String],
                    limit: Int? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let base = labels ? "t10k-labels-idx1-ubyte" : "t10k-images-idx3-ubyte"
        let raw = dir + "/" + base, gz = raw + ".gz"
        try TestFiles.write(bytes, to: raw)
        try TestFiles.writeGzip(bytes, to: gz)
        for p in [raw, gz] {
            assertAETError("\(what) (\(p.hasSuffix(".gz") ? "gzip" : "raw"))", contains: [p + ": "] + cause,
                           exitCode: ExitCode.badInput, file: file, line: line) {
                if labels { _ = try IDX.readLabels(p, limit: limit) } else { _ = try IDX.readImages(p, limit: limit) }
            }
        }
    }

    func testWrongMagic() throws {
        try expectBoth("images magic", TestFiles.idxImages(count: 1, magic: 0x801), labels: false,
                       contains: ["wrong magic number", "0x801", "0x803"])
        try expectBoth("labels magic", TestFiles.idxLabels([1], magic: 0x803), labels: true,
                       contains: ["wrong magic number", "0x803", "0x801"])
        // A gzip file of the wrong format entirely (e.g. a tar header).
        try expectBoth("garbage", Array("hello world, not IDX data".utf8), labels: true, contains: ["wrong magic number"])
    }

    func testTruncatedRawAndGzip() throws {
        var img = TestFiles.idxImages(count: 3)
        img.removeLast(100)
        try expectBoth("truncated images", img, labels: false,
                       contains: ["truncated", "\(16 + 3 * 784 - 100) bytes", "expected \(16 + 3 * 784)"])
        try expectBoth("truncated labels", TestFiles.idxLabels([1, 2, 3], count: 5), labels: true,
                       contains: ["truncated", "11 bytes", "expected 13"])
        try expectBoth("truncated header", Array(TestFiles.idxImages(count: 1).prefix(10)), labels: false,
                       contains: ["truncated header", "10 of 16"])
        // limit still validates the length of the whole file.
        try expectBoth("truncated with limit", img, labels: false, contains: ["truncated"], limit: 1)
    }

    func testTruncatedGzipStream() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let gz = try TestFiles.gzipData(TestFiles.idxImages(count: 4), in: dir)
        // Cut the compressed stream inside the deflate data: the IDX content comes up short.
        for keep in [gz.count - 9, gz.count / 2, 12] {
            let p = dir + "/cut\(keep)-images-idx3-ubyte.gz"
            try TestFiles.write(Array(gz.prefix(keep)), to: p)
            let msg = assertAETError("gzip cut to \(keep) of \(gz.count) bytes", contains: [p + ": "], exitCode: ExitCode.badInput) {
                _ = try IDX.readImages(p)
            }
            if let msg {
                XCTAssertTrue(msg.contains("truncated") || msg.contains("unexpected end of file"), msg)
            }
        }
        // A flipped CRC byte is caught too (zlib checks it at the end of the stream).
        var bad = gz
        bad[bad.count - 6] ^= 0xff
        let p = dir + "/crc-images-idx3-ubyte.gz"
        try TestFiles.write(bad, to: p)
        assertAETError("bad CRC", contains: [p + ": ", "corrupt gzip data"], exitCode: ExitCode.badInput) {
            _ = try IDX.readImages(p)
        }
    }

    /// A gzip file cut inside its 8-byte trailer (CRC-32 + ISIZE) still inflates to the full IDX
    /// content, but it is a truncated file: zlib reports it only through gzerror (Z_BUF_ERROR,
    /// "unexpected end of file") while gzread returns 0 as at a clean end. With the CRC gone the
    /// content is not integrity-checked at all.
    func testGzipCutInsideTrailerIsRejected() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let img = TestFiles.idxImages(count: 2)
        let lbl = TestFiles.idxLabels([1, 2])
        let gzImg = try TestFiles.gzipData(img, in: dir), gzLbl = try TestFiles.gzipData(lbl, in: dir)
        for cut in [1, 4, 8] {
            let pi = dir + "/cut\(cut)-images-idx3-ubyte.gz", pl = dir + "/cut\(cut)-labels-idx1-ubyte.gz"
            try TestFiles.write(Array(gzImg.dropLast(cut)), to: pi)
            try TestFiles.write(Array(gzLbl.dropLast(cut)), to: pl)
            assertAETError("images gzip missing \(cut) trailer bytes", contains: [pi + ": "], exitCode: ExitCode.badInput) {
                _ = try IDX.readImages(pi)
            }
            assertAETError("labels gzip missing \(cut) trailer bytes", contains: [pl + ": "], exitCode: ExitCode.badInput) {
                _ = try IDX.readLabels(pl, limit: 1)
            }
        }
    }

    func testNotAGzipNamedGz() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let p = dir + "/train-labels-idx1-ubyte.gz"
        try TestFiles.write(TestFiles.idxLabels([1, 2]), to: p)  // raw IDX under a .gz name
        assertAETError("raw named .gz", contains: [p + ": ", "not a gzip file"], exitCode: ExitCode.badInput) {
            _ = try IDX.readLabels(p)
        }
        let one = dir + "/one-byte.gz"
        try TestFiles.write([0x1f], to: one)
        assertAETError("1-byte .gz", contains: [one + ": ", "not a gzip file"], exitCode: ExitCode.badInput) {
            _ = try IDX.readLabels(one)
        }
    }

    func testEmptyFile() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        for name in ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"] {
            let p = dir + "/" + name
            try TestFiles.write([], to: p)
            assertAETError("empty \(name)", contains: [p + ": ", "empty file"], exitCode: ExitCode.badInput) {
                _ = try IDX.readImages(p)
            }
        }
        // A gzip stream of zero bytes is a valid gzip file with an empty (hence truncated) IDX.
        let p = dir + "/empty-content-labels-idx1-ubyte.gz"
        try TestFiles.writeGzip([], to: p)
        assertAETError("empty gzip content", contains: [p + ": ", "truncated header", "0 of 8"]) {
            _ = try IDX.readLabels(p)
        }
    }

    func testTrailingBytes() throws {
        try expectBoth("trailing images", TestFiles.idxImages(count: 2) + [0], labels: false,
                       contains: ["trailing data", "\(16 + 2 * 784) bytes"])
        try expectBoth("trailing labels", TestFiles.idxLabels([1, 2, 3], count: 2), labels: true,
                       contains: ["trailing data", "10 bytes"])
        try expectBoth("trailing with limit", TestFiles.idxLabels([1, 2, 3], count: 2), labels: true,
                       contains: ["trailing data"], limit: 1)
    }

    func testImageLabelCountMismatch() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let img = dir + "/train-images-idx3-ubyte.gz", lbl = dir + "/train-labels-idx1-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.idxImages(count: 3), to: img)
        try TestFiles.writeGzip(TestFiles.idxLabels([1, 2]), to: lbl)
        assertAETError("count mismatch", contains: [lbl, img, "2 labels", "3 images"], exitCode: ExitCode.badInput) {
            _ = try IDX.load(dir: dir, split: .train)
        }
        // The check compares the file counts, not the limited counts.
        assertAETError("count mismatch with limit", contains: [lbl, "2 labels", "3 images"]) {
            _ = try IDX.load(dir: dir, split: .train, limit: 1)
        }
    }

    func testWrongDimensions() throws {
        try expectBoth("27×28", TestFiles.idxImages(count: 1, rows: 27, cols: 28), labels: false,
                       contains: ["27×28", "expected 28×28"])
        try expectBoth("28×32", TestFiles.idxImages(count: 1, rows: 28, cols: 32), labels: false,
                       contains: ["28×32", "expected 28×28"])
        try expectBoth("zero rows", TestFiles.idxImages(count: 1, rows: 0, cols: 28, pixels: []), labels: false,
                       contains: ["implausible dimensions"])
        // A header claiming 2^32−1 images must be rejected before allocating anything.
        try expectBoth("huge count", TestFiles.be32(0x803) + TestFiles.be32(0xffff_ffff) + TestFiles.be32(28) + TestFiles.be32(28),
                       labels: false, contains: ["implausible dimensions"])
        try expectBoth("huge label count", TestFiles.be32(0x801) + TestFiles.be32(0xffff_ffff), labels: true,
                       contains: ["implausible label count"])
    }

    func testLabelOutOfRange() throws {
        try expectBoth("label 10", TestFiles.idxLabels([0, 9, 10, 1]), labels: true, contains: ["label 10", "0...9"])
        try expectBoth("label 255", TestFiles.idxLabels([255]), labels: true, contains: ["label 255"])
    }

    func testLimitReadsPrefixButValidatesLength() throws {
        let dir = try TestFiles.tempDir(self, "idx")
        let img = TestFiles.idxImages(count: 6)
        let labels: [UInt8] = [9, 8, 7, 6, 5, 4]
        try TestFiles.writeGzip(img, to: dir + "/train-images-idx3-ubyte.gz")
        try TestFiles.write(TestFiles.idxLabels(labels), to: dir + "/train-labels-idx1-ubyte")
        let (n, rows, cols, px) = try IDX.readImages(dir + "/train-images-idx3-ubyte.gz", limit: 2)
        XCTAssertEqual(n, 6)
        XCTAssertEqual(rows, 28)
        XCTAssertEqual(cols, 28)
        XCTAssertEqual(px, Array(img[16..<(16 + 2 * 784)]))
        let (nl, lb) = try IDX.readLabels(dir + "/train-labels-idx1-ubyte", limit: 4)
        XCTAssertEqual(nl, 6)
        XCTAssertEqual(lb, [9, 8, 7, 6])
        let d = try IDX.load(dir: dir, split: .train, limit: 3)
        XCTAssertEqual(d.count, 3)
        XCTAssertEqual(d.labels, [9, 8, 7])
        XCTAssertEqual(d.pixels, Array(img[16..<(16 + 3 * 784)]))
        let all = try IDX.load(dir: dir, split: .train, limit: 100)
        XCTAssertEqual(all.count, 6)
        XCTAssertEqual(all.labels, labels)
        // A trailing byte after the images is still found with a limit.
        try TestFiles.writeGzip(img + [1], to: dir + "/train-images-idx3-ubyte.gz")
        assertAETError("limit + trailing", contains: [dir + "/train-images-idx3-ubyte.gz", "trailing data"]) {
            _ = try IDX.load(dir: dir, split: .train, limit: 2)
        }
    }

    // MARK: BatchLoader

    func testBatchLoaderGatherAndBinarize() {
        let dim = 784
        var px = [UInt8](repeating: 0, count: 4 * dim)
        for s in 0..<4 { for i in 0..<dim { px[s * dim + i] = UInt8((s * 61 + i * 13) % 256) } }
        // Values around the binarization threshold in sample 2.
        px[2 * dim + 0] = 127; px[2 * dim + 1] = 128; px[2 * dim + 2] = 0; px[2 * dim + 3] = 255
        let ds = Dataset(name: "t", count: 4, rows: 28, cols: 28, pixels: px, labels: [0, 1, 2, 3])
        let idx: [Int32] = [2, 0, 3, 2]
        for binarize in [false, true] {
            let loader = BatchLoader(ds, binarize: binarize)
            let out = FloatBuffer(idx.count * dim)
            idx.withUnsafeBufferPointer { loader.fill(out.pointer, indices: $0) }
            for (r, s) in idx.enumerated() {
                for i in 0..<dim {
                    let v = Double(px[Int(s) * dim + i]) / 255
                    let want = binarize ? (v >= 0.5 ? 1.0 : 0.0) : v
                    XCTAssertEqual(Double(out[r * dim + i]), want, accuracy: 1e-6, "binarize=\(binarize) row \(r) px \(i)")
                    if abs(Double(out[r * dim + i]) - want) > 1e-6 { return }
                }
            }
            if binarize {
                XCTAssertEqual(out[0], 0)  // 127/255 < 0.5
                XCTAssertEqual(out[1], 1)  // 128/255 > 0.5
                XCTAssertEqual(out[3], 1)
            } else {
                XCTAssertEqual(out[3], 1)
                XCTAssertEqual(out[0], 127 / 255, accuracy: 1e-7)
            }
            // Contiguous fill of samples 1..<3.
            let c = FloatBuffer(2 * dim)
            loader.fill(c.pointer, start: 1, count: 2)
            for i in 0..<(2 * dim) {
                let v = Double(px[dim + i]) / 255
                XCTAssertEqual(Double(c[i]), binarize ? (v >= 0.5 ? 1 : 0) : v, accuracy: 1e-6)
            }
        }
    }

    func testDatasetFiltered() {
        let px = (0..<(3 * 784)).map { UInt8($0 / 784) }
        let ds = Dataset(name: "t", count: 3, rows: 28, cols: 28, pixels: px, labels: [4, 7, 4])
        let f = ds.filtered { $0 == 4 }
        XCTAssertEqual(f.count, 2)
        XCTAssertEqual(f.labels, [4, 4])
        XCTAssertEqual(Array(f.pixels[0..<784]), [UInt8](repeating: 0, count: 784))
        XCTAssertEqual(Array(f.pixels[784...]), [UInt8](repeating: 2, count: 784))
    }
}
