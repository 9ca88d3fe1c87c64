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
    public private(set) var m: FloatBuffer
    public private(set) var v: FloatBuffer
    /// Steps taken (PyTorch state["step"]).
    public var step: Int = 0

    public init(count: Int, config: AdamConfig) {
        self.count = count
        self.config = config
        m = FloatBuffer(count)
        v = FloatBuffer(count)
    }

    /// Moves the moments into memory owned elsewhere (node-shared); contents are not copied.
    public func rebind(m: FloatBuffer, v: FloatBuffer) {
        precondition(m.count >= count && v.count >= count)
        self.m = m
        self.v = v
    }

    /// One update of `params` from `grads` (the first `count` entries). Returns false when a
    /// gradient was Inf or NaN (the update has then been applied with it: the caller stops).
    @discardableResult
    public func update(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>) -> Bool {
        step += 1
        let k = coefficients()
        return 0 == aet_adam(params, grads, m.pointer, v.pointer, count, k.shrink, k.l2, k.oneMinusB1, k.b2, k.oneMinusB2, k.stepSize, k.bc2Sqrt, k.eps)
    }

    /// One update of the parameter range `range` only, from the sum of several gradient buffers
    /// (node-shared gradients of every rank, summed in buffer order inside the pass). The step
    /// counter advances as in `update`: every rank calls this once per step for its own range.
    /// With `publish`, the new values of the range are also written there (same offsets).
    @discardableResult
    public func update(params: UnsafeMutablePointer<Float>, gradientSources: UnsafePointer<UnsafePointer<Float>?>, sourceCount: Int,
                       range: Range<Int>, publish: UnsafeMutablePointer<Float>? = nil) -> Bool {
        step += 1
        let k = coefficients()
        guard !range.isEmpty else { return true }
        let lo = range.lowerBound
        // Offset every source pointer by lo through a small fixed array (no allocation).
        return withUnsafeTemporaryAllocation(of: UnsafePointer<Float>?.self, capacity: sourceCount) { src in
            for r in 0..<sourceCount { src[r] = gradientSources[r]! + lo }
            return 0 == aet_adam_sum(params + lo, publish.map { $0 + lo }, src.baseAddress!, Int32(sourceCount), m.pointer + lo, v.pointer + lo, range.count,
                         k.shrink, k.l2, k.oneMinusB1, k.b2, k.oneMinusB2, k.stepSize, k.bc2Sqrt, k.eps)
        }
    }

    private func coefficients() -> (shrink: Float, l2: Float, oneMinusB1: Float, b2: Float, oneMinusB2: Float, stepSize: Float, bc2Sqrt: Float, eps: Float) {
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
        return (shrink, l2, oneMinusB1, b2, oneMinusB2, stepSize, bc2Sqrt, eps)
    }
}
