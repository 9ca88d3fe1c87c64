import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Independent PNG decoding for the tests: chunk parsing and a table-driven CRC-32 written here,
/// and zlib inflation by python3 (a different zlib binding than the encoder's).
enum PNGDecode {
    struct Chunk {
        var type: String
        var data: [UInt8]
    }

    struct Image {
        var width: Int, height: Int, bitDepth: UInt8, colorType: UInt8
        var compression: UInt8, filter: UInt8, interlace: UInt8
        var chunkTypes: [String]
        var idat: [UInt8]
    }

    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func be32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3])
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Parses the chunk structure, checking the signature and every chunk's CRC.
    static func parse(_ data: Data) throws -> Image {
        let b = [UInt8](data)
        guard b.count >= 8, Array(b[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else {
            throw Failure(description: "bad signature")
        }
        var o = 8
        var chunks: [Chunk] = []
        while o < b.count {
            guard o + 12 <= b.count else { throw Failure(description: "truncated chunk header at \(o)") }
            let len = Int(be32(b, o))
            guard o + 12 + len <= b.count else { throw Failure(description: "truncated chunk at \(o)") }
            let type = String(decoding: b[(o + 4)..<(o + 8)], as: UTF8.self)
            let crc = be32(b, o + 8 + len)
            let computed = crc32(b[(o + 4)..<(o + 8 + len)])
            guard crc == computed else {
                throw Failure(description: "CRC mismatch in \(type): stored \(crc), computed \(computed)")
            }
            chunks.append(Chunk(type: type, data: Array(b[(o + 8)..<(o + 8 + len)])))
            o += 12 + len
        }
        guard let ihdr = chunks.first, ihdr.type == "IHDR", ihdr.data.count == 13 else {
            throw Failure(description: "first chunk is not a 13-byte IHDR")
        }
        guard chunks.last?.type == "IEND", chunks.last?.data.isEmpty == true else {
            throw Failure(description: "last chunk is not an empty IEND")
        }
        let h = ihdr.data
        return Image(width: Int(be32(h, 0)), height: Int(be32(h, 4)), bitDepth: h[8], colorType: h[9],
                     compression: h[10], filter: h[11], interlace: h[12],
                     chunkTypes: chunks.map(\.type),
                     idat: chunks.filter { $0.type == "IDAT" }.flatMap(\.data))
    }

    /// Runs python3 with a script and stdin; nil when python3 cannot be started.
    static func python(_ script: String, input: Data) throws -> Data? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        let inPipe = Pipe(), outPipe = Pipe()
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        // Feed stdin on another thread so a large output cannot deadlock the pipes.
        let writer = Thread {
            inPipe.fileHandleForWriting.write(input)
            try? inPipe.fileHandleForWriting.close()
        }
        writer.start()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if p.terminationStatus == 127 { return nil }  // env: python3 not found
        guard p.terminationStatus == 0 else {
            throw Failure(description: "python3 exited with \(p.terminationStatus)")
        }
        return out
    }

    /// Inflates the IDAT stream with python3's zlib and removes the per-row filter bytes
    /// (all of which must be 0). Fails when python3 is absent.
    static func pixels(_ img: Image) throws -> [UInt8] {
        let script = "import sys, zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))"
        guard let raw = try python(script, input: Data(img.idat)) else {
            throw TestFailure("python3 is not available to inflate the IDAT stream (install python3)")
        }
        let channels = img.colorType == 2 ? 3 : 1
        let rowBytes = img.width * channels
        let bytes = [UInt8](raw)
        guard bytes.count == (rowBytes + 1) * img.height else {
            throw Failure(description: "inflated \(bytes.count) bytes, expected \((rowBytes + 1) * img.height)")
        }
        var px: [UInt8] = []
        px.reserveCapacity(rowBytes * img.height)
        for y in 0..<img.height {
            let o = y * (rowBytes + 1)
            guard bytes[o] == 0 else { throw Failure(description: "row \(y) has filter type \(bytes[o])") }
            px += bytes[(o + 1)..<(o + 1 + rowBytes)]
        }
        return px
    }
}

final class PNGTests: XCTestCase {
    func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: g.next()) }
    }

    func testCRCTableMatchesKnownValue() {
        // The standard CRC-32 check value.
        XCTAssertEqual(PNGDecode.crc32(Array("123456789".utf8)[...]), 0xCBF4_3926)
    }

    func testGrayscaleRoundTrip() throws {
        let w = 37, h = 23
        var px = randomBytes(w * h, seed: 1)
        px[0] = 0; px[1] = 255
        let png = PNG.encodeGray(width: w, height: h, pixels: px)
        let img = try PNGDecode.parse(png)
        XCTAssertEqual(img.width, w)
        XCTAssertEqual(img.height, h)
        XCTAssertEqual(img.bitDepth, 8)
        XCTAssertEqual(img.colorType, 0)
        XCTAssertEqual([img.compression, img.filter, img.interlace], [0, 0, 0])
        XCTAssertEqual(img.chunkTypes, ["IHDR", "IDAT", "IEND"])
        XCTAssertEqual(try PNGDecode.pixels(img), px)
    }

    func testRGBRoundTrip() throws {
        let w = 19, h = 11
        let px = randomBytes(3 * w * h, seed: 2)
        let png = PNG.encodeRGB(width: w, height: h, pixels: px)
        let img = try PNGDecode.parse(png)
        XCTAssertEqual(img.width, w)
        XCTAssertEqual(img.height, h)
        XCTAssertEqual(img.bitDepth, 8)
        XCTAssertEqual(img.colorType, 2)
        XCTAssertEqual(try PNGDecode.pixels(img), px)
    }

    func testCorruptedChunkIsDetectedByTheTestDecoder() throws {
        var png = [UInt8](PNG.encodeGray(width: 4, height: 4, pixels: [UInt8](repeating: 7, count: 16)))
        png[20] ^= 0x01  // inside IHDR data
        XCTAssertThrowsError(try PNGDecode.parse(Data(png)))
    }

    func testWriteGrayWritesFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("png-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("a.png")
        let px: [UInt8] = [0, 64, 128, 255, 1, 2]
        try PNG.writeGray(width: 3, height: 2, pixels: px, to: url)
        let data = try Data(contentsOf: url)
        XCTAssertEqual(data, PNG.encodeGray(width: 3, height: 2, pixels: px))
        XCTAssertEqual(try PNGDecode.parse(data).width, 3)
    }

    func testImageGridLayoutScalingAndClamping() throws {
        // Two 2×2 images in the first row, one in the second; scale 3, gap 2.
        let a: [Float] = [0, 1, 0.5, 0.25]
        let b: [Float] = [1.5, -1, .nan, 1]
        let c: [Float] = [0.2, 0.2, 0.2, 0.2]
        let g = ImageGrid.pixels(rows: [[a, b], [c]], imageSide: 2, scale: 3, gap: 2, background: 200)
        XCTAssertEqual(g.width, 2 * 6 + 3 * 2)
        XCTAssertEqual(g.height, 2 * 6 + 3 * 2)
        func at(_ x: Int, _ y: Int) -> UInt8 { g.pixels[y * g.width + x] }
        // Border and gaps.
        XCTAssertEqual(at(0, 0), 200)
        XCTAssertEqual(at(8, 5), 200)  // between the two images of row 0
        // Image a, upscaled: pixel (1, 0) covers x 5...7, y 2...4.
        for y in 2...4 {
            XCTAssertEqual(at(2, y), 0)
            for x in 5...7 { XCTAssertEqual(at(x, y), 255) }
        }
        XCTAssertEqual(at(2, 5), 128)  // 0.5 → 127.5 → 128
        XCTAssertEqual(at(6, 7), 64)   // 0.25 → 63.75 → 64
        // Image b, clamped: 1.5 → 255, -1 → 0, NaN → 0.
        XCTAssertEqual(at(10, 2), 255)
        XCTAssertEqual(at(13, 2), 0)
        XCTAssertEqual(at(10, 5), 0)
        // Row 1: image c, then an empty cell filled with background.
        XCTAssertEqual(at(2, 10), 51)
        XCTAssertEqual(at(12, 12), 200)

        let png = ImageGrid.png(rows: [[a, b], [c]], imageSide: 2, scale: 3, gap: 2, background: 200)
        let img = try PNGDecode.parse(png)
        XCTAssertEqual(img.width, g.width)
        XCTAssertEqual(try PNGDecode.pixels(img), g.pixels)
    }

    func testImageGridRowsSplitting() {
        let imgs = (0..<23).map { [Float](repeating: Float($0), count: 4) }
        let rows = ImageGrid.rows(imgs, perRow: 10)
        XCTAssertEqual(rows.map(\.count), [10, 10, 3])
        XCTAssertEqual(rows[2][2][0], 22)
    }
}
