import CKernels
import Foundation

/// Adam hyperparameters, with PyTorch's names and defaults.
public struct AdamConfig: Codable, Equatable, Sendable {
    public var lr: Double = 1e-3
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var eps: Double = 1e-8
    public var weightDecay: Double = 0
    /// AdamW: decoupled weight decay (p ← p·(1 − lr·wd)) instead of L2 added to the gradient.
    public var decoupled: Bool = false
    public init() {}
}

/// Adam exactly as torch.optim.Adam / AdamW (single-tensor path), as one pass over the flat
/// parameter, gradient and moment buffers.
public final class Adam {
    public var config: AdamConfig
    public let count: Int
    /// First and second moments (PyTorch exp_avg, exp_avg_sq), same layout as the parameters.
    public let m: FloatBuffer
    public let v: FloatBuffer
    /// Steps taken (PyTorch state["step"]).
    public var step: Int = 0

    public init(count: Int, config: AdamConfig) {
        self.count = count
        self.config = config
        m = FloatBuffer(count)
        v = FloatBuffer(count)
    }

    /// One update of `params` from `grads` (the first `count` entries).
    public func update(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>) {
        step += 1
        // Scalars in Double from the Double hyperparameters, then Float, as PyTorch does.
        let c = config
        let t = Double(step)
        let bc1 = 1 - pow(c.beta1, t)
        let bc2 = 1 - pow(c.beta2, t)
        let stepSize = Float(c.lr / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        let oneMinusB1 = Float(1 - c.beta1), b2 = Float(c.beta2), oneMinusB2 = Float(1 - c.beta2), eps = Float(c.eps)
        let l2 = Float(c.decoupled ? 0 : c.weightDecay)
        let shrink = Float(c.decoupled ? 1 - c.lr * c.weightDecay : 1)
        aet_adam(params, grads, m.pointer, v.pointer, count, shrink, l2, oneMinusB1, b2, oneMinusB2, stepSize, bc2Sqrt, eps)
    }
}
