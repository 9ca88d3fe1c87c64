import Foundation

/// Composes rows of square grayscale images (Float values in [0, 1], row-major) into one
/// grayscale picture, each image scaled up by an integer factor (nearest neighbour) and separated
/// by a gap of `background` pixels (also around the border).
public enum ImageGrid {
    /// The composed picture as raw 8-bit gray pixels. Rows may have different lengths; the
    /// picture is as wide as the longest row. Values are clamped to [0, 1]; NaN becomes 0.
    /// Every image must hold `imageSide * imageSide` values.
    public static func pixels(rows: [[[Float]]], imageSide: Int = 28, scale: Int = 3, gap: Int = 2,
                              background: UInt8 = 255) -> (width: Int, height: Int, pixels: [UInt8]) {
        precondition(imageSide > 0 && scale > 0 && gap >= 0, "ImageGrid: bad geometry")
        let cell = imageSide * scale
        let cols = max(1, rows.map(\.count).max() ?? 1)
        let nRows = max(1, rows.count)
        let width = cols * cell + (cols + 1) * gap
        let height = nRows * cell + (nRows + 1) * gap
        var px = [UInt8](repeating: background, count: width * height)
        for (r, row) in rows.enumerated() {
            for (c, image) in row.enumerated() {
                precondition(image.count == imageSide * imageSide,
                             "ImageGrid: image has \(image.count) values, expected \(imageSide * imageSide)")
                let x0 = gap + c * (cell + gap)
                let y0 = gap + r * (cell + gap)
                for iy in 0..<imageSide {
                    for ix in 0..<imageSide {
                        let v = gray(image[iy * imageSide + ix])
                        for sy in 0..<scale {
                            let base = (y0 + iy * scale + sy) * width + x0 + ix * scale
                            for sx in 0..<scale { px[base + sx] = v }
                        }
                    }
                }
            }
        }
        return (width, height, px)
    }

    /// The composed picture as a grayscale PNG.
    public static func png(rows: [[[Float]]], imageSide: Int = 28, scale: Int = 3, gap: Int = 2,
                           background: UInt8 = 255) -> Data {
        let g = pixels(rows: rows, imageSide: imageSide, scale: scale, gap: gap, background: background)
        return PNG.encodeGray(width: g.width, height: g.height, pixels: g.pixels)
    }

    /// Splits a flat list of images into rows of at most `perRow` images.
    public static func rows(_ images: [[Float]], perRow: Int) -> [[[Float]]] {
        precondition(perRow > 0)
        return stride(from: 0, to: images.count, by: perRow).map {
            Array(images[$0..<min($0 + perRow, images.count)])
        }
    }

    /// A [0, 1] value to an 8-bit gray level (rounded, clamped, NaN → 0).
    @inline(__always) static func gray(_ v: Float) -> UInt8 {
        guard v > 0 else { return 0 }  // also NaN
        if v >= 1 { return 255 }
        return UInt8((v * 255).rounded())
    }
}
