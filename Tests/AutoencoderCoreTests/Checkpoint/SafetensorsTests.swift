import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

final class SafetensorsTests: XCTestCase {
    let path = "/ckpt/test.safetensors"

    // MARK: Helpers

    /// Encodes (name, shape, values) tensors through one contiguous buffer.
    func encode(_ tensors: [(String, [Int], [Float])], metadata: [String: String] = [:]) -> Data {
        let all = tensors.flatMap { $0.2 }
        return all.withUnsafeBufferPointer { buf in
            var off = 0
            var list: [Safetensors.Tensor] = []
            for (name, shape, values) in tensors {
                let part = UnsafeBufferPointer(rebasing: buf[off ..< off + values.count])
                list.append((name: name, shape: shape, data: part))
                off += values.count
            }
            return Safetensors.encode(tensors: list, metadata: metadata)
        }
    }

    /// A file from a hand-written header and data section, header padded with spaces to 8 bytes.
    func file(_ header: String, _ data: [UInt8] = [], pad: Bool = true) -> Data {
        var h = Array(header.utf8)
        while pad && h.count % 8 != 0 { h.append(0x20) }
        var out = Data()
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        out.append(contentsOf: data)
        return out
    }

    func le(_ values: [Float]) -> [UInt8] {
        values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    }

    func le(_ values: [Int64]) -> [UInt8] {
        values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    }

    /// Decoding must throw an AETError.data whose one-line message names the path and contains `cause`.
    func assertRejects(_ data: Data, _ cause: String, requireChecksum: Bool = false,
                       file: StaticString = #filePath, line: UInt = #line) {
        do {
            let f = try Safetensors.decode(data, path: path, requireChecksum: requireChecksum)
            XCTFail("decoded a bad file with tensors \(f.tensors.map(\.name)); expected '\(cause)'", file: file, line: line)
        } catch let e as AETError {
            XCTAssertEqual(e.exitCode, ExitCode.badInput, file: file, line: line)
            XCTAssertTrue(e.message.hasPrefix(path + ": "), "message lacks path: \(e.message)", file: file, line: line)
            if !cause.isEmpty {
                XCTAssertTrue(e.message.contains(cause), "'\(e.message)' lacks '\(cause)'", file: file, line: line)
            }
            XCTAssertFalse(e.message.contains("\n"), "multi-line message: \(e.message)", file: file, line: line)
        } catch {
            XCTFail("not an AETError: \(error)", file: file, line: line)
        }
    }

    /// Either decodes or throws AETError.data naming the path (used for random corruption).
    /// Returns true if it threw.
    func decodesOrRejects(_ data: Data, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        do {
            _ = try Safetensors.decode(data, path: path)
            return false
        } catch let e as AETError {
            XCTAssertEqual(e.exitCode, ExitCode.badInput, file: file, line: line)
            XCTAssertTrue(e.message.hasPrefix(path + ": "), e.message, file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), e.message, file: file, line: line)
            return true
        } catch {
            XCTFail("not an AETError: \(error)", file: file, line: line)
            return true
        }
    }

    func sampleFile() -> Data {
        encode([("w", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [3], [-1, 0.5, 7])], metadata: ["epoch": "2"])
    }

    func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("aet-st-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    // MARK: Round trip

    func testRoundTripTensorsShapesValuesMetadata() throws {
        var rng = SplitMix64(seed: 7)
        let w = (0 ..< 12).map { _ in rng.uniform(-1, 1) }
        let odd = "odd \"name\"\n\\ ü/é"
        let tensors: [(String, [Int], [Float])] = [
            ("enc.0.weight", [3, 4], w),
            ("enc.0.bias", [4], [0.25, -0.5, .greatestFiniteMagnitude, -.leastNonzeroMagnitude]),
            ("scalar", [], [42.5]),
            ("empty", [0, 5], []),
            (odd, [2], [.infinity, -0.0]),
        ]
        let meta = ["epoch": "3", "format": "pt", "note": "quote \" backslash \\ newline \n tab \t ctl \u{1} ü"]
        let data = encode(tensors, metadata: meta)

        // Header length is a multiple of 8 and the data section is exactly the values.
        let n = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        XCTAssertEqual(n % 8, 0)
        XCTAssertEqual(data.count, 8 + n + 4 * tensors.reduce(0) { $0 + $1.2.count })

        let f = try Safetensors.decode(data, path: path, requireChecksum: true)
        XCTAssertEqual(f.path, path)
        XCTAssertEqual(f.tensors.map(\.name), ["enc.0.weight", "enc.0.bias", "scalar", "empty", odd])
        var offset = 0
        for (name, shape, values) in tensors {
            let t = try XCTUnwrap(f.tensor(name))
            XCTAssertEqual(t.dtype, "F32")
            XCTAssertEqual(t.shape, shape, name)
            XCTAssertEqual(t.begin, offset, name)
            XCTAssertEqual(t.end, offset + 4 * values.count, name)
            offset = t.end
            let got = try f.floats(name)
            XCTAssertEqual(got.map(\.bitPattern), values.map(\.bitPattern), name)
        }
        var expectedMeta = meta
        expectedMeta[Safetensors.checksumKey] = data.withUnsafeBytes {
            SHA256Digest.hex(UnsafeRawBufferPointer(rebasing: $0[(8 + n)...]))
        }
        XCTAssertEqual(f.metadata, expectedMeta)
        XCTAssertEqual(f.metadata[Safetensors.checksumKey]?.count, 64)

        // copyFloats, and its count check.
        let out = UnsafeMutablePointer<Float>.allocate(capacity: 12)
        defer { out.deallocate() }
        try f.copyFloats("enc.0.weight", into: out, count: 12)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: out, count: 12)), w)
        XCTAssertThrowsError(try f.copyFloats("enc.0.weight", into: out, count: 11)) { e in
            XCTAssertEqual((e as? AETError)?.message,
                           "\(path): tensor 'enc.0.weight' has 12 elements, expected 11")
        }
        XCTAssertThrowsError(try f.floats("nope")) { e in
            XCTAssertEqual((e as? AETError)?.message, "\(path): missing tensor 'nope'")
        }
        XCTAssertNil(f.tensor("nope"))
    }

    func testEncodeIsDeterministicAndOverridesChecksumKey() throws {
        let a = encode([("x", [2], [1, 2])], metadata: ["b": "1", "a": "2", Safetensors.checksumKey: "bogus"])
        let b = encode([("x", [2], [1, 2])], metadata: ["a": "2", Safetensors.checksumKey: "other", "b": "1"])
        XCTAssertEqual(a, b)
        let f = try Safetensors.decode(a, path: path)
        XCTAssertNotEqual(f.metadata[Safetensors.checksumKey], "bogus")
        // No tensors at all is a valid file too.
        let empty = encode([], metadata: [:])
        let g = try Safetensors.decode(empty, path: path, requireChecksum: true)
        XCTAssertEqual(g.tensors.count, 0)
        XCTAssertEqual(g.metadata[Safetensors.checksumKey], SHA256Digest.hex(Data()))
    }

    func testWriteAndReadFile() throws {
        let dir = try tempDir()
        let url = dir.appendingPathComponent("m.safetensors")
        let values: [Float] = [1, 2, 3, 4, 5, 6]
        try values.withUnsafeBufferPointer { buf in
            try Safetensors.write(tensors: [(name: "w", shape: [2, 3], data: buf)], metadata: ["k": "v"], to: url)
        }
        let f = try Safetensors.read(url, requireChecksum: true)
        XCTAssertEqual(f.path, url.path)
        XCTAssertEqual(try f.floats("w"), values)
        XCTAssertEqual(f.metadata["k"], "v")
        // No temp file left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["m.safetensors"])

        let missing = dir.appendingPathComponent("absent.safetensors")
        XCTAssertThrowsError(try Safetensors.read(missing)) { e in
            XCTAssertTrue((e as? AETError)?.message.hasPrefix(missing.path + ": ") == true, "\(e)")
        }
        // A write into a missing directory is an I/O error naming the destination.
        let bad = dir.appendingPathComponent("no/such/dir/x.safetensors")
        XCTAssertThrowsError(try values.withUnsafeBufferPointer { buf in
            try Safetensors.write(tensors: [(name: "w", shape: [6], data: buf)], metadata: [:], to: bad)
        }) { e in
            XCTAssertEqual((e as? AETError)?.exitCode, ExitCode.io)
            XCTAssertTrue((e as? AETError)?.message.hasPrefix(bad.path) == true, "\(e)")
        }
    }

    // MARK: Files from another writer

    func testReadsHandWrittenFileFromSpec() throws {
        // Different key order, extra whitespace, metadata first, I64 after F32, padded with spaces.
        let header = """
        { "__metadata__" : { "format" : "pt" } ,
          "ids":{"shape" : [ 3 ],"data_offsets":[ 24 , 48 ],"dtype":"I64"},
          "w" : { "data_offsets" : [0, 24], "dtype" : "F32", "shape" : [2, 3] } }
        """
        let ws: [Float] = [1.5, -2, 3.25, 0, 1e-3, 6e7]
        let ids: [Int64] = [-1, 1 << 40, 7]
        let data = file(header, le(ws) + le(ids))
        XCTAssertEqual(data.count % 8, 0)

        let f = try Safetensors.decode(data, path: path)
        XCTAssertEqual(f.tensors.map(\.name), ["w", "ids"])  // data-offset order
        XCTAssertEqual(f.tensors[1], TensorInfo(name: "ids", dtype: "I64", shape: [3], begin: 24, end: 48))
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(try f.floats("w"), ws)
        let raw = try f.bytes("ids")
        XCTAssertEqual(raw.count, 24)
        let got = (0 ..< 3).map { i in raw.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) } }
        XCTAssertEqual(got, ids)
        XCTAssertThrowsError(try f.floats("ids")) { e in
            XCTAssertEqual((e as? AETError)?.message, "\(path): tensor 'ids' has dtype I64, expected F32")
        }
        // No checksum: fine unless required.
        assertRejects(data, "missing data_sha256 checksum", requireChecksum: true)
        // No __metadata__ at all, unpadded header, every dtype of the spec.
        let sizes: [(String, Int)] = [("BOOL", 1), ("U8", 1), ("I8", 1), ("F8_E5M2", 1), ("F8_E4M3", 1),
                                      ("I16", 2), ("U16", 2), ("F16", 2), ("BF16", 2), ("I32", 4), ("U32", 4),
                                      ("F32", 4), ("F64", 8), ("I64", 8), ("U64", 8)]
        var entries: [String] = []
        var off = 0
        for (dt, size) in sizes {
            entries.append("\"t\(dt)\": {\"dtype\": \"\(dt)\", \"shape\": [2], \"data_offsets\": [\(off), \(off + 2 * size)]}")
            off += 2 * size
        }
        let g = try Safetensors.decode(file("{" + entries.joined(separator: ",") + "}",
                                            [UInt8](repeating: 9, count: off), pad: false), path: path)
        XCTAssertEqual(g.tensors.count, 15)
        XCTAssertEqual(g.metadata, [:])
        XCTAssertEqual(g.tensor("tBF16")?.end, g.tensor("tBF16").map { $0.begin + 4 })
    }

    /// The reference implementation (Python `safetensors` with numpy; Launch/test.sh installs
    /// it) must load our file and agree on values and metadata, and we must read what it writes.
    func testReferenceImplementationLoadsOurFile() throws {
        guard runPython(["-c", "import safetensors.numpy, numpy"]).status == 0 else {
            throw TestFailure("python3 with safetensors and numpy is needed (pip install safetensors numpy; Launch/test.sh installs them)")
        }
        let dir = try tempDir()
        let url = dir.appendingPathComponent("ref.safetensors")
        let values: [Float] = [1, -2.5, 3, 4, 5, 6, 0.125]
        try values.withUnsafeBufferPointer { buf in
            try Safetensors.write(tensors: [
                (name: "w", shape: [2, 3], data: UnsafeBufferPointer(rebasing: buf[0 ..< 6])),
                (name: "s", shape: [], data: UnsafeBufferPointer(rebasing: buf[6 ..< 7])),
            ], metadata: ["epoch": "5"], to: url)
        }
        let script = """
        import sys, safetensors, safetensors.numpy as sn
        t = sn.load_file(sys.argv[1])
        with safetensors.safe_open(sys.argv[1], "np") as f: m = f.metadata()
        print(t["w"].dtype, t["w"].shape, t["w"][1, 0], t["w"][0, 1], t["s"].shape, t["s"], m["epoch"], len(m["data_sha256"]))
        """
        let r = runPython(["-c", script, url.path])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.output.trimmingCharacters(in: .whitespacesAndNewlines), "float32 (2, 3) 4.0 -2.5 () 0.125 5 64")

        // And we read what it writes.
        let theirs = dir.appendingPathComponent("theirs.safetensors")
        let w = runPython(["-c", """
        import sys, numpy as np, safetensors.numpy as sn
        sn.save_file({"a": np.arange(6, dtype=np.float32).reshape(3, 2), "i": np.array([5, -6], dtype=np.int64),
                      "h": np.ones((1, 3), dtype=np.float16)}, sys.argv[1], metadata={"x": "y"})
        """, theirs.path])
        XCTAssertEqual(w.status, 0, w.output)
        let f = try Safetensors.read(theirs)
        XCTAssertEqual(try f.floats("a"), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(f.tensor("a")?.shape, [3, 2])
        XCTAssertEqual(f.tensor("h")?.dtype, "F16")
        XCTAssertEqual(f.tensor("i")?.dtype, "I64")
        XCTAssertEqual(f.metadata, ["x": "y"])
    }

    // MARK: Corruption

    func testFlippedDataByteIsChecksumError() throws {
        var data = sampleFile()
        XCTAssertNoThrow(try Safetensors.decode(data, path: path))
        data[data.count - 5] ^= 0x40
        assertRejects(data, "checksum mismatch (file is corrupt)")
        // A wrong checksum value in the header is caught the same way.
        let f = file("{\"__metadata__\":{\"data_sha256\":\"\(String(repeating: "0", count: 64))\"},"
                     + "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", [1])
        assertRejects(f, "checksum mismatch (file is corrupt)")
    }

    func testFlippedHeaderBytesThrowOrDecodeNeverCrash() throws {
        let data = sampleFile()
        let n = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        // F32 -> G32: unknown dtype.
        let text = String(decoding: data[8 ..< 8 + n], as: UTF8.self)
        let at = 8 + text.utf8.distance(from: text.utf8.startIndex, to: text.range(of: "F32")!.lowerBound)
        var bad = data
        bad[at] ^= 0x01
        assertRejects(bad, "unknown dtype 'G32'")

        // Every header byte, several flips each: always an AETError or a valid decode.
        var rejected = 0, total = 0
        for i in 0 ..< 8 + n {
            for mask: UInt8 in [0x01, 0x02, 0x10, 0x20, 0x80, 0xFF] {
                var d = data
                d[i] ^= mask
                total += 1
                if decodesOrRejects(d) { rejected += 1 }
            }
        }
        // Almost all flips must be detected (a few are harmless, e.g. in a metadata value
        // which is not covered by the checksum, or whitespace).
        XCTAssertGreaterThan(Double(rejected) / Double(total), 0.9, "\(rejected)/\(total)")
    }

    func testEveryTruncationThrows() {
        let data = sampleFile()
        for len in 0 ..< data.count {
            assertRejects(data.prefix(len), "")
        }
        assertRejects(Data(), "shorter than the 8-byte header length")
        assertRejects(data.prefix(7), "shorter than the 8-byte header length")
        assertRejects(data.prefix(8), "extends beyond the end of the file")
        assertRejects(data.prefix(data.count - 1), "")
        // A slice of a larger Data (non-zero startIndex) decodes like a fresh Data.
        let padded = Data([1, 2, 3]) + data
        XCTAssertEqual(try Safetensors.decode(padded[3...], path: path).floats("b"), [-1, 0.5, 7])
    }

    func testHeaderLengthAndEncodingErrors() {
        var zero = Data(count: 16)
        assertRejects(zero, "header length is 0")
        zero.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(100_000_001).littleEndian, as: UInt64.self) }
        assertRejects(zero, "exceeds the 100000000-byte limit")
        zero.withUnsafeMutableBytes { $0.storeBytes(of: UInt64.max.littleEndian, as: UInt64.self) }
        assertRejects(zero, "exceeds the 100000000-byte limit")
        zero.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(9).littleEndian, as: UInt64.self) }
        assertRejects(zero, "extends beyond the end of the file (16 bytes)")

        assertRejects(file("{\"a\": \u{1}}"), "not valid JSON")
        assertRejects(file("{\"a\":1"), "not valid JSON")
        assertRejects(file("[1, 2]"), "not a JSON object")
        assertRejects(file("\"str\""), "not a JSON object")
        assertRejects(file("   "), "not a JSON object")
        var invalidUTF8 = Array("{\"a\":\"".utf8) + [0xFF, 0xFE] + Array("\"}".utf8)
        while invalidUTF8.count % 8 != 0 { invalidUTF8.append(0x20) }
        assertRejects(file(""), "header length is 0")
        var d = Data()
        withUnsafeBytes(of: UInt64(invalidUTF8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: invalidUTF8)
        assertRejects(d, "not valid UTF-8")
        // UTF-16 JSON (valid for JSONSerialization, not for safetensors).
        let u16: [UInt8] = Array("{}".utf16).flatMap { (c: UInt16) -> [UInt8] in [UInt8(c & 0xFF), UInt8(c >> 8)] }
            + [0x20, 0x20, 0x20, 0x20]
        var e = Data()
        withUnsafeBytes(of: UInt64(u16.count).littleEndian) { e.append(contentsOf: $0) }
        e.append(contentsOf: u16)
        assertRejects(e, "not a JSON object")
        // Deeply nested JSON is refused, not a stack overflow.
        assertRejects(file("{\"a\":" + String(repeating: "[", count: 100_000) + "}"), "not valid JSON")
    }

    func testMetadataMustBeStringToString() {
        assertRejects(file("{\"__metadata__\": {\"epoch\": 3}}"), "__metadata__ value for 'epoch' is not a string")
        assertRejects(file("{\"__metadata__\": {\"a\": null}}"), "is not a string")
        assertRejects(file("{\"__metadata__\": {\"a\": {\"b\": \"c\"}}}"), "is not a string")
        assertRejects(file("{\"__metadata__\": [\"a\"]}"), "__metadata__ is not a string-to-string map")
        assertRejects(file("{\"__metadata__\": \"a\"}"), "__metadata__ is not a string-to-string map")
        XCTAssertEqual(try Safetensors.decode(file("{\"__metadata__\": {}}"), path: path).metadata, [:])
    }

    func testTensorEntryFieldErrors() {
        let x = "\"x\""
        func entry(_ body: String, _ data: [UInt8] = [0, 0, 0, 0]) -> Data { file("{\(x): \(body)}", data) }
        assertRejects(entry("[]"), "tensor 'x': entry is not a JSON object")
        assertRejects(entry("{\"shape\": [1], \"data_offsets\": [0, 4]}"), "tensor 'x': missing dtype")
        assertRejects(entry("{\"dtype\": \"F32\", \"data_offsets\": [0, 4]}"), "tensor 'x': missing shape")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1]}"), "tensor 'x': missing data_offsets")
        assertRejects(entry("{\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}"), "dtype is not a string")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}"), "shape is not an array")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}"),
                      "shape entries must be integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [true], \"data_offsets\": [0, 4]}"),
                      "shape entries must be integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1.0], \"data_offsets\": [0, 4]}"),
                      "shape entries must be integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}"),
                      "data_offsets is not an array of two integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": {\"a\": 0}}"),
                      "data_offsets is not an array of two integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4.5]}"),
                      "data_offsets must be integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 1e30]}"),
                      "data_offsets must be integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 18446744073709551615]}"),
                      "data_offsets must be integers")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [false, 4]}"),
                      "data_offsets must be integers")
        assertRejects(entry("{\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}"), "unknown dtype 'F33'")
        assertRejects(entry("{\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}"), "unknown dtype 'f32'")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}"), "negative dimension -1")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}"), "negative data offset")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}"), "end 0 < begin 4")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}"),
                      "span 4 bytes but F32 shape [2] needs 8")
        assertRejects(entry("{\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 4]}"), "needs 8")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}"),
                      "data_offsets [0, 8] beyond the data section (4 bytes)")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 4]}"),
                      "is too large")
        assertRejects(entry("{\"dtype\": \"F32\", \"shape\": [9223372036854775807, 9223372036854775807], \"data_offsets\": [0, 4]}"),
                      "is too large")
        // A zero dimension makes the tensor empty, whatever the others are.
        XCTAssertNoThrow(try Safetensors.decode(
            file("{\"e\": {\"dtype\": \"F32\", \"shape\": [9223372036854775807, 0], \"data_offsets\": [0, 0]}}"),
            path: path))
        // Control characters in a name are escaped so the message stays one line.
        assertRejects(file("{\"a\\nb\": {\"dtype\": \"X\", \"shape\": [], \"data_offsets\": [0, 0]}}"),
                      "tensor 'a\\x0ab': unknown dtype 'X'")
    }

    func testCoverageOverlapHoleTrailing() {
        let four = [UInt8](repeating: 1, count: 8)
        let a = "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
        let b = "\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
        XCTAssertNoThrow(try Safetensors.decode(file("{\(a)[0, 4]}, \(b)[4, 8]}}", four), path: path))
        assertRejects(file("{\(a)[0, 4]}, \(b)[2, 6]}}", four), "overlap another tensor")
        assertRejects(file("{\(a)[0, 4]}, \(b)[0, 4]}}", four), "overlap another tensor")
        let u = "\"u\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": "
        assertRejects(file("{\(a)[0, 4]}, \(u)[3, 7]}}", [UInt8](repeating: 0, count: 7)),
                      "tensor 'u': data_offsets [3, 7] overlap another tensor")
        assertRejects(file("{\(a)[0, 4]}, \(b)[4, 8]}}", four + [0]), "1 trailing bytes not covered")
        assertRejects(file("{\(a)[0, 4]}}", four), "4 trailing bytes not covered")
        assertRejects(file("{\(a)[4, 8]}}", four), "hole at bytes [0, 4) before tensor 'a'")
        assertRejects(file("{\(a)[0, 4]}, \(b)[5, 9]}}", four + [0]), "hole at bytes [4, 5) before tensor 'b'")
        assertRejects(file("{}", [0]), "1 trailing bytes not covered")
        // Empty tensors may sit anywhere inside the covered range.
        let e = "\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": "
        XCTAssertEqual(try Safetensors.decode(file("{\(e)[4, 4]}, \(a)[0, 4]}, \(b)[4, 8]}}", four), path: path)
            .tensors.map(\.name), ["a", "e", "b"])
        assertRejects(file("{\(e)[2, 2]}, \(a)[0, 4]}, \(b)[4, 8]}}", four), "overlap another tensor")
    }

    func testRandomCorruptionNeverTraps() {
        var rng = SplitMix64(seed: 2024)
        let base = encode([("w", [3, 2], [1, 2, 3, 4, 5, 6]), ("s", [], [9]), ("e", [0], [])],
                          metadata: ["epoch": "1"])
        var rejected = 0
        let rounds = 3000
        for round in 0 ..< rounds {
            var d = base
            let flips = 1 + Int(rng.next() % 3)
            for _ in 0 ..< flips {
                let i = Int(rng.next() % UInt64(d.count))
                d[i] ^= UInt8(1 + rng.next() % 255)
            }
            if round % 5 == 0 { d = d.prefix(Int(rng.next() % UInt64(d.count + 1))) }
            if decodesOrRejects(d) { rejected += 1 }
        }
        XCTAssertGreaterThan(rejected, rounds * 9 / 10)
        // Pure garbage, with a plausible header length.
        for _ in 0 ..< 500 {
            let len = Int(rng.next() % 200)
            var d = Data((0 ..< len).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
            if len >= 8 {
                let hl = UInt64(rng.next() % UInt64(len - 7))
                d.withUnsafeMutableBytes { $0.storeBytes(of: hl.littleEndian, as: UInt64.self) }
            }
            XCTAssertTrue(decodesOrRejects(d))
        }
    }

    // MARK: Python

}
