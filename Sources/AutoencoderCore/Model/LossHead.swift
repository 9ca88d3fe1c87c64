import CKernels
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


public enum LossHead {
    /// For `n` samples of `d` pixels: y = σ(z) is written, the summed per-sample loss is returned
    /// (each sample's loss is its mean over pixels, or its sum when `perImageSum`), and
    /// dz = scale · d(sum of per-sample losses)/dz is written.
    public static func forwardBackward(_ kind: LossKind, logits z: UnsafePointer<Float>, output y: UnsafeMutablePointer<Float>,
                                       target x: UnsafePointer<Float>, dz: UnsafeMutablePointer<Float>?,
                                       count n: Int, dim d: Int, scale: Float, perImageSum: Bool = false) -> Double {
        let norm: Float = perImageSum ? 1 : 1 / Float(d)
        let g = scale * norm
        let total: Double
        switch kind {
        case .mse: total = aet_head_mse(z, y, x, dz, n * d, g)
        case .bce: total = aet_head_bce(z, y, x, dz, n * d, g)
        case .l1: total = aet_head_l1(z, y, x, dz, n * d, g)
        }
        return total * Double(norm)
    }

    /// Summed squared error and summed BCE over all elements (for per-pixel test metrics).
    public static func evalSums(logits z: UnsafePointer<Float>, output y: UnsafeMutablePointer<Float>,
                                target x: UnsafePointer<Float>, count: Int) -> (sse: Double, bce: Double) {
        var sse = 0.0, bce = 0.0
        aet_eval_sums(z, y, x, count, &sse, &bce)
        return (sse, bce)
    }
}
