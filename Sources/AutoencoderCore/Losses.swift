import Foundation

/// Reconstruction losses. Every loss is computed from the decoder's logits z, with the output
/// sigmoid y = σ(z) fused in, so the gradient handed back is dL/dz (no 0/0 at saturation).
public enum LossKind: String, Codable, CaseIterable, Sendable {
    /// Mean squared error over all pixels (torch.nn.MSELoss).
    case mse
    /// Binary cross-entropy, mean over pixels (torch.nn.BCELoss, Keras binary_crossentropy),
    /// computed from logits: max(z,0) − z·x + log(1 + e^−|z|).
    case bce
    /// Mean absolute error over pixels (torch.nn.L1Loss).
    case l1
}

/// Per-element BCE from a logit, numerically safe.
@inline(__always) public func bceFromLogit(_ z: Float, _ x: Float) -> Float {
    max(z, 0) - z * x + log1pf(expf(-abs(z)))
}

public enum LossHead {
    /// For `n` samples of `d` pixels: y = σ(z) is written, the summed per-sample loss is returned
    /// (each sample's loss is its mean over pixels, or its sum when `perImageSum`), and
    /// dz = scale · d(sum of per-sample losses)/dz is written.
    @inline(__always)
    public static func forwardBackward(_ kind: LossKind, logits z: UnsafePointer<Float>, output y: UnsafeMutablePointer<Float>,
                                       target x: UnsafePointer<Float>, dz: UnsafeMutablePointer<Float>?,
                                       count n: Int, dim d: Int, scale: Float, perImageSum: Bool = false) -> Double {
        let total = n * d
        let norm: Float = perImageSum ? 1 : 1 / Float(d)
        let g = scale * norm
        var sum: Double = 0
        // Accumulate per row in Float (vectorisable), across rows in Double.
        for r in 0..<n {
            var rowSum: Float = 0
            let base = r * d
            switch kind {
            case .mse:
                for i in base..<(base + d) {
                    let yi = logistic(z[i])
                    y[i] = yi
                    let e = yi - x[i]
                    rowSum += e * e
                    if let dz { dz[i] = 2 * e * yi * (1 - yi) * g }
                }
            case .bce:
                for i in base..<(base + d) {
                    let zi = z[i]
                    let yi = logistic(zi)
                    y[i] = yi
                    rowSum += bceFromLogit(zi, x[i])
                    if let dz { dz[i] = (yi - x[i]) * g }
                }
            case .l1:
                for i in base..<(base + d) {
                    let yi = logistic(z[i])
                    y[i] = yi
                    let e = yi - x[i]
                    rowSum += abs(e)
                    if let dz { dz[i] = (e > 0 ? 1 : (e < 0 ? -1 : 0)) * yi * (1 - yi) * g }
                }
            }
            sum += Double(rowSum * norm)
        }
        _ = total
        return sum
    }

    /// Summed squared error and summed BCE over all elements (for per-pixel test metrics).
    public static func evalSums(logits z: UnsafePointer<Float>, output y: UnsafeMutablePointer<Float>,
                                target x: UnsafePointer<Float>, count: Int) -> (sse: Double, bce: Double) {
        var sse = 0.0, bce = 0.0
        var i = 0
        while i < count {
            let end = min(i + 784, count)
            var s: Float = 0, b: Float = 0
            for j in i..<end {
                let yj = logistic(z[j])
                y[j] = yj
                let e = yj - x[j]
                s += e * e
                b += bceFromLogit(z[j], x[j])
            }
            sse += Double(s)
            bce += Double(b)
            i = end
        }
        return (sse, bce)
    }
}
