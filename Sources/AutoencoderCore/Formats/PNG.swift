import CZlib
import Foundation

/// A minimal PNG encoder: 8-bit grayscale or 8-bit RGB, no interlacing, filter type 0 (None) on
/// every row, the image data deflated by zlib's `compress2`, chunk CRCs from zlib's `crc32`.
public enum PNG {
    /// The 8-byte PNG file signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Encodes a grayscale image; `pixels` is row-major, `width * height` bytes.
    public static func encodeGray(width: Int, height: Int, pixels: [UInt8]) -> Data {
        precondition(pixels.count == width * height,
                     "PNG.encodeGray: \(pixels.count) pixels for \(width)x\(height)")
        return encode(width: width, height: height, channels: 1, colorType: 0, pixels: pixels)
    }

    /// Encodes an RGB image; `pixels` is row-major, interleaved R,G,B, `3 * width * height` bytes.
    public static func encodeRGB(width: Int, height: Int, pixels: [UInt8]) -> Data {
        precondition(pixels.count == 3 * width * height,
                     "PNG.encodeRGB: \(pixels.count) bytes for \(width)x\(height) RGB")
        return encode(width: width, height: height, channels: 3, colorType: 2, pixels: pixels)
    }

    /// Encodes and writes a grayscale PNG atomically.
    public static func writeGray(width: Int, height: Int, pixels: [UInt8], to url: URL) throws {
        try AtomicFile.write(encodeGray(width: width, height: height, pixels: pixels), to: url)
    }

    /// Encodes and writes an RGB PNG atomically.
    public static func writeRGB(width: Int, height: Int, pixels: [UInt8], to url: URL) throws {
        try AtomicFile.write(encodeRGB(width: width, height: height, pixels: pixels), to: url)
    }

    // MARK: - Internals

    private static func encode(width: Int, height: Int, channels: Int, colorType: UInt8,
                               pixels: [UInt8]) -> Data {
        precondition(width > 0 && height > 0 && width <= 0x7FFF_FFFF && height <= 0x7FFF_FFFF,
                     "PNG: bad size \(width)x\(height)")
        // Raw scanlines: one filter-type byte (0 = None) before each row.
        let rowBytes = width * channels
        var raw = [UInt8](repeating: 0, count: (rowBytes + 1) * height)
        pixels.withUnsafeBufferPointer { src in
            raw.withUnsafeMutableBufferPointer { dst in
                for y in 0..<height {
                    let o = y * (rowBytes + 1)
                    dst[o] = 0
                    UnsafeMutableRawPointer(dst.baseAddress! + o + 1)
                        .copyMemory(from: src.baseAddress! + y * rowBytes, byteCount: rowBytes)
                }
            }
        }
        let idat = deflate(raw)

        var ihdr = [UInt8]()
        ihdr.reserveCapacity(13)
        appendBE32(&ihdr, UInt32(width))
        appendBE32(&ihdr, UInt32(height))
        ihdr += [8, colorType, 0, 0, 0]  // bit depth, colour type, compression, filter, interlace

        var out = [UInt8]()
        out.reserveCapacity(idat.count + 64)
        out += signature
        appendChunk(&out, "IHDR", ihdr)
        appendChunk(&out, "IDAT", idat)
        appendChunk(&out, "IEND", [])
        return Data(out)
    }

    /// zlib stream (RFC 1950) of `bytes` at the default compression level.
    static func deflate(_ bytes: [UInt8]) -> [UInt8] {
        var destLen = compressBound(uLong(bytes.count))
        var dest = [UInt8](repeating: 0, count: Int(destLen))
        let rc = bytes.withUnsafeBufferPointer { src in
            dest.withUnsafeMutableBufferPointer { dst in
                compress2(dst.baseAddress, &destLen, src.baseAddress, uLong(src.count), Z_DEFAULT_COMPRESSION)
            }
        }
        // compress2 fails only on out-of-memory or a buffer smaller than compressBound.
        precondition(rc == Z_OK, "PNG: zlib compress2 failed with code \(rc)")
        dest.removeSubrange(Int(destLen)...)
        return dest
    }

    private static func appendBE32(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    private static func appendChunk(_ out: inout [UInt8], _ type: String, _ data: [UInt8]) {
        let typeBytes = Array(type.utf8)
        precondition(typeBytes.count == 4)
        appendBE32(&out, UInt32(data.count))
        var crc = crc32(0, nil, 0)
        crc = typeBytes.withUnsafeBufferPointer { crc32(crc, $0.baseAddress, uInt($0.count)) }
        if !data.isEmpty {
            crc = data.withUnsafeBufferPointer { crc32(crc, $0.baseAddress, uInt($0.count)) }
        }
        out += typeBytes
        out += data
        appendBE32(&out, UInt32(truncatingIfNeeded: crc))
    }
}
