import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

final class NPYTests: XCTestCase {
    let path = "/data/x.npy"

    /// Parses a version 1.0 preamble by hand: returns (dict text without padding, preamble length).
    func parsePreamble(_ d: Data, file: StaticString = #filePath, line: UInt = #line) throws -> (String, Int) {
        let b = [UInt8](d)
        XCTAssertGreaterThanOrEqual(b.count, 10, file: file, line: line)
        XCTAssertEqual(Array(b[0 ..< 6]), [0x93] + Array("NUMPY".utf8), "magic", file: file, line: line)
        XCTAssertEqual(b[6], 1, "major version", file: file, line: line)
        XCTAssertEqual(b[7], 0, "minor version", file: file, line: line)
        let hlen = Int(b[8]) | Int(b[9]) << 8
        let total = 10 + hlen
        XCTAssertEqual(total % 64, 0, "preamble not 64-byte aligned", file: file, line: line)
        XCTAssertLessThanOrEqual(total, b.count, file: file, line: line)
        let header = try XCTUnwrap(String(bytes: b[10 ..< total], encoding: .ascii), file: file, line: line)
        XCTAssertTrue(header.hasSuffix("\n"), "header must end with a newline", file: file, line: line)
        let body = header.dropLast()
        let dict = String(body.reversed().drop { $0 == " " }.reversed())
        return (dict, total)
    }

    func floatBytes(_ v: [Float]) -> [UInt8] {
        v.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Array($0) } }
    }

    func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("aet-npy-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func assertRejects(_ d: Data, _ cause: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let r = try NPY.decode(d, path: path)
            XCTFail("decoded a bad file: \(r.descr) \(r.shape)", file: file, line: line)
        } catch let e as AETError {
            XCTAssertEqual(e.exitCode, ExitCode.badInput, file: file, line: line)
            XCTAssertTrue(e.message.hasPrefix(path + ": "), e.message, file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), e.message, file: file, line: line)
            if !cause.isEmpty {
                XCTAssertTrue(e.message.contains(cause), "'\(e.message)' lacks '\(cause)'", file: file, line: line)
            }
        } catch {
            XCTFail("not an AETError: \(error)", file: file, line: line)
        }
    }

    /// A version 1.0 file with an arbitrary header text (padded to 64) and payload.
    func npy(_ header: String, _ payload: [UInt8], major: UInt8 = 1) -> Data {
        var h = Array(header.utf8)
        let pre = major == 1 ? 10 : 12
        while (pre + h.count + 1) % 64 != 0 { h.append(0x20) }
        h.append(0x0A)
        var d = Data([0x93] + Array("NUMPY".utf8) + [major, 0])
        if major == 1 {
            d.append(contentsOf: [UInt8(h.count & 0xFF), UInt8(h.count >> 8)])
        } else {
            withUnsafeBytes(of: UInt32(h.count).littleEndian) { d.append(contentsOf: $0) }
        }
        d.append(contentsOf: h)
        d.append(contentsOf: payload)
        return d
    }

    // MARK: Encoding

    func testEncodeFloatsHeaderAndPayload() throws {
        let values: [Float] = (0 ..< 12).map { Float($0) * 0.5 - 2 }
        let d = values.withUnsafeBufferPointer { NPY.encode(floats: $0, shape: [3, 4]) }
        let (dict, pre) = try parsePreamble(d)
        XCTAssertEqual(dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }")
        XCTAssertEqual(Array(d[pre...]), floatBytes(values))
        XCTAssertEqual(d.count, pre + 48)

        // 1-d, 0-d and empty shapes use Python's tuple syntax.
        let one: [Float] = [1, 2, 3]
        XCTAssertEqual(try parsePreamble(one.withUnsafeBufferPointer { NPY.encode(floats: $0, shape: [3]) }).0,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }")
        XCTAssertEqual(try parsePreamble([Float(7)].withUnsafeBufferPointer { NPY.encode(floats: $0, shape: []) }).0,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
        XCTAssertEqual(try parsePreamble([Float]().withUnsafeBufferPointer { NPY.encode(floats: $0, shape: [0, 4]) }).0,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }")
    }

    func testEncodeUInt8HeaderAndPayload() throws {
        let labels: [UInt8] = [0, 1, 9, 255, 3]
        let d = NPY.encode(uint8: labels, shape: [5])
        let (dict, pre) = try parsePreamble(d)
        XCTAssertEqual(dict, "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }")
        XCTAssertEqual(Array(d[pre...]), labels)
        // A longer shape still aligns (header crosses a 64-byte boundary).
        let big = [UInt8](repeating: 1, count: 6)
        let d2 = NPY.encode(uint8: big, shape: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 6])
        let (_, pre2) = try parsePreamble(d2)
        XCTAssertEqual(pre2, 128)
    }

    func testWriteReadRoundTrip() throws {
        let dir = try tempDir()
        let f = dir.appendingPathComponent("f.npy"), u = dir.appendingPathComponent("u.npy")
        let values: [Float] = [1.5, -2, .infinity, 0, 3, 4]
        try values.withUnsafeBufferPointer { try NPY.write(floats: $0, shape: [2, 3], to: f) }
        try NPY.write(uint8: [4, 5, 6], shape: [3], to: u)
        let a = try NPY.read(f)
        XCTAssertEqual(a.descr, "<f4")
        XCTAssertEqual(a.shape, [2, 3])
        XCTAssertFalse(a.fortranOrder)
        XCTAssertEqual([UInt8](a.payload), floatBytes(values))
        let b = try NPY.read(u)
        XCTAssertEqual(b.descr, "|u1")
        XCTAssertEqual(b.shape, [3])
        XCTAssertEqual([UInt8](b.payload), [4, 5, 6])
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)), ["f.npy", "u.npy"])
        let missing = dir.appendingPathComponent("none.npy")
        XCTAssertThrowsError(try NPY.read(missing)) { e in
            XCTAssertTrue((e as? AETError)?.message.hasPrefix(missing.path + ": ") == true, "\(e)")
        }
    }

    // MARK: Decoding other writers' files

    func testDecodeHandWrittenHeaders() throws {
        // Other key order, double quotes, fortran order, version 2.0, big-endian descr.
        let r = try NPY.decode(npy("{\"shape\": (2, 2), \"fortran_order\": True, 'descr': '>i2'}",
                                   [0, 1, 0, 2, 0, 3, 0, 4], major: 2), path: path)
        XCTAssertEqual(r.descr, ">i2")
        XCTAssertEqual(r.shape, [2, 2])
        XCTAssertTrue(r.fortranOrder)
        XCTAssertEqual([UInt8](r.payload), [0, 1, 0, 2, 0, 3, 0, 4])
        let s = try NPY.decode(npy("{'descr':'<f8','fortran_order':False,'shape':()}", [UInt8](repeating: 0, count: 8)),
                               path: path)
        XCTAssertEqual(s.shape, [])
        XCTAssertEqual(s.payload.count, 8)
        XCTAssertEqual(NPY.itemSize("<U3"), 12)
        XCTAssertEqual(NPY.itemSize("<M8[ns]"), 8)
        XCTAssertNil(NPY.itemSize("|O"))
        XCTAssertNil(NPY.itemSize("<f3"))
    }

    func testRejectsBadFiles() {
        let good = NPY.encode(uint8: [1, 2, 3], shape: [3])
        XCTAssertNoThrow(try NPY.decode(good, path: path))
        for len in 0 ..< good.count { assertRejects(good.prefix(len), "") }
        assertRejects(good + Data([0]), "payload has 4 bytes but |u1 shape [3] needs 3")
        var bad = good
        bad[1] = UInt8(ascii: "X")
        assertRejects(bad, "not a .npy file (bad magic)")
        bad = good
        bad[6] = 4
        assertRejects(bad, "unsupported .npy format version 4.0")
        bad = good
        bad[8] = 0xFF
        bad[9] = 0xFF
        assertRejects(bad, "extends beyond the end of the file")

        let p3: [UInt8] = [1, 2, 3]
        assertRejects(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (3), }", p3), "'shape' is not a tuple")
        assertRejects(npy("{'descr': '|u1', 'fortran_order': False}", p3), "must have exactly the keys")
        assertRejects(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), 'x': 1}", p3), "")
        assertRejects(npy("{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (3,)}", p3),
                      "duplicate key 'descr'")
        assertRejects(npy("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", p3), "unsupported descr '|O'")
        assertRejects(npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", p3), "")
        assertRejects(npy("{'descr': '|u1', 'fortran_order': 0, 'shape': (3,), }", p3), "")
        assertRejects(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (-3,), }", p3), "non-negative integer")
        assertRejects(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999,), }", p3),
                      "integer too large")
        assertRejects(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 2), }", p3),
                      "too large")
        assertRejects(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } junk", p3), "unexpected text")
        assertRejects(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", p3), "needs 4")
    }

    func testRandomCorruptionNeverTraps() {
        var rng = SplitMix64(seed: 99)
        let base = [Float](repeating: 1, count: 6).withUnsafeBufferPointer { NPY.encode(floats: $0, shape: [2, 3]) }
        var rejected = 0
        for _ in 0 ..< 2000 {
            var d = base
            // Flip inside the preamble (the payload is not checksummed, so flips there are legal).
            let i = Int(rng.next() % 70)
            d[i] ^= UInt8(1 + rng.next() % 255)
            do {
                _ = try NPY.decode(d, path: path)
            } catch let e as AETError {
                rejected += 1
                XCTAssertTrue(e.message.hasPrefix(path + ": "), e.message)
            } catch {
                XCTFail("not an AETError: \(error)")
            }
        }
        XCTAssertGreaterThan(rejected, 1000)
    }

    // MARK: numpy


    func testNumpyLoadsOurFilesAndWeReadNumpys() throws {
        guard runPython(["-c", "import numpy"]).status == 0 else {
            throw TestFailure("python3 with numpy is needed to check the .npy files against numpy (apt-get install python3-numpy; Launch/test.sh installs it)")
        }
        let dir = try tempDir()
        let f = dir.appendingPathComponent("f.npy"), u = dir.appendingPathComponent("u.npy")
        let values: [Float] = (0 ..< 12).map { Float($0) * 0.25 - 1 }
        try values.withUnsafeBufferPointer { try NPY.write(floats: $0, shape: [3, 4], to: f) }
        try NPY.write(uint8: [7, 0, 255], shape: [3], to: u)
        let r = runPython(["-c", """
        import sys, numpy as np
        a = np.load(sys.argv[1], allow_pickle=False); b = np.load(sys.argv[2], allow_pickle=False)
        print(a.dtype, a.shape, a[0, 1], a[2, 3], a.flags['C_CONTIGUOUS'], b.dtype, b.shape, b.tolist())
        """, f.path, u.path])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.output.trimmingCharacters(in: .whitespacesAndNewlines),
                       "float32 (3, 4) -0.75 1.75 True uint8 (3,) [7, 0, 255]")

        // numpy's own files (it pads differently) read back through our parser.
        let theirs = dir.appendingPathComponent("theirs.npy")
        let w = runPython(["-c", "import sys, numpy as np; np.save(sys.argv[1], np.arange(6, dtype='<f4').reshape(2, 3))",
                           theirs.path])
        XCTAssertEqual(w.status, 0, w.output)
        let t = try NPY.read(theirs)
        XCTAssertEqual(t.descr, "<f4")
        XCTAssertEqual(t.shape, [2, 3])
        XCTAssertEqual([UInt8](t.payload), floatBytes([0, 1, 2, 3, 4, 5]))
    }
}
