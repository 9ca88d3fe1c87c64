import CKernels
import Foundation

/// Fully connected layer with a fused activation: y = f(x W^T + b). W is [out, in] row-major,
/// as torch.nn.Linear stores it.
///
/// Every product is a oneDNN matmul primitive created once per batch size: forward
/// y = f(x·Wᵀ + b) with the bias and activation fused as post-ops; backward one element-wise
/// pass (dz = dy·f'(y) and db = Σ dz together), then dW = dzᵀ·x and dx = dz·W. With bf16
/// precision the forward rounds W and x to bf16 (kept for backward) and the backward pass writes
/// dz as bf16; every product accumulates in f32 and writes f32.
public final class Dense: Layer {
    public let inputSize: Int
    public let outputSize: Int
    public let activation: Activation
    var w: UnsafeMutablePointer<Float>!
    var b: UnsafeMutablePointer<Float>!
    var dw: UnsafeMutablePointer<Float>!
    var db: UnsafeMutablePointer<Float>!
    /// Backward writes dW and db (β = 0) instead of adding to them, so the model need not
    /// zero this layer's gradients before each step. Off when something else adds to dW first
    /// (the contractive penalty).
    public var overwritesGradients = false
    public var precision: Precision = .f32

    private final class Ops {
        let forward: MatMul
        var weightGrad: MatMul?
        var weightGradAdd: MatMul?
        var inputGrad: MatMul?
        init(forward: MatMul) { self.forward = forward }
    }
    private var cache = PrimitiveCache<Ops>()
    /// bf16: W, x (kept from forward for dW) and dz rounded to bf16.
    private var wLow: BF16Buffer?
    private var xLow: BF16Buffer?
    private var dzLow: BF16Buffer?

    public init(_ input: Int, _ output: Int, activation: Activation) {
        inputSize = input
        outputSize = output
        self.activation = activation
    }

    public var parameterShapes: [(name: String, shape: [Int])] {
        [("weight", [outputSize, inputSize]), ("bias", [outputSize])]
    }
    public var macsPerSample: Int { inputSize * outputSize }
    public var torchModuleCount: Int { activation == .identity ? 1 : 2 }
    public var torchModules: [String] {
        ["nn.Linear(\(inputSize), \(outputSize))"] + (activation.torchModule.map { [$0] } ?? [])
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        w = parameters
        b = parameters + inputSize * outputSize
        dw = gradients
        db = gradients + inputSize * outputSize
    }

    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {
        let nw = inputSize * outputSize
        switch scheme {
        case .torch:
            let bound = 1 / Float(inputSize).squareRoot()
            for i in 0..<nw { w[i] = rng.uniform(-bound, bound) }
            for i in 0..<outputSize { b[i] = rng.uniform(-bound, bound) }
        case .glorot:
            let limit = (6 / Float(inputSize + outputSize)).squareRoot()
            for i in 0..<nw { w[i] = rng.uniform(-limit, limit) }
            for i in 0..<outputSize { b[i] = 0 }
        }
    }

    public func reserve(maxBatch: Int) {
        cache.removeAll()
        if precision == .bf16 {
            wLow = BF16Buffer(inputSize * outputSize)
            xLow = BF16Buffer(maxBatch * inputSize)
            dzLow = BF16Buffer(maxBatch * outputSize)
        } else {
            wLow = nil; xLow = nil; dzLow = nil
        }
    }

    /// The bf16 workspaces for a batch of n (grown only when a batch exceeds the reservation).
    private func lowBuffers(_ n: Int) -> (w: UnsafeMutablePointer<UInt16>, x: UnsafeMutablePointer<UInt16>, dz: UnsafeMutablePointer<UInt16>) {
        if wLow == nil || xLow!.count < n * inputSize { reserve(maxBatch: n) }
        return (wLow!.pointer, xLow!.pointer, dzLow!.pointer)
    }

    private func ops(_ n: Int) -> Ops {
        let o = outputSize, k = inputSize, t = precision, act = activation
        return cache.get(n) {
            // y[n, o] = f(x[n, k] · Wᵀ + b), Wᵀ read from W [o, k] by strides.
            Ops(forward: MatMul(m: n, n: o, k: k, a: .rows(k, t), b: .transposed(k, t), c: .rows(o, .f32), bias: true,
                                activation: act, what: "Dense(\(k), \(o)) forward"))
        }
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        let op = ops(n).forward
        if precision == .bf16 {
            let low = lowBuffers(n)
            aet_f32_to_bf16(w, low.w, inputSize * outputSize)
            aet_f32_to_bf16(x, low.x, n * inputSize)
            op.run(low.x, low.w, y, bias: b)
        } else {
            op.run(x, w, y, bias: b)
        }
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        let o = outputSize, k = inputSize, t = precision
        let ops = self.ops(n)
        let add = !overwritesGradients
        // dz = dy·f'(y) and db (+)= Σ_rows dz in one pass; bf16: dz rounded into dzLow.
        let low: (w: UnsafeMutablePointer<UInt16>, x: UnsafeMutablePointer<UInt16>, dz: UnsafeMutablePointer<UInt16>)? =
            t == .bf16 ? lowBuffers(n) : nil
        aet_dense_backward_prep(y, dy, low?.dz, db, n, o, activation.kernelKind, Activation.leakySlope, add ? 1 : 0)
        let dz = low.map { UnsafeRawPointer($0.dz) } ?? UnsafeRawPointer(dy)
        let xs = low.map { UnsafeRawPointer($0.x) } ?? UnsafeRawPointer(x)
        let ws = low.map { UnsafeRawPointer($0.w) } ?? UnsafeRawPointer(w!)
        // dW[o, k] (+)= dzᵀ[o, n] · x[n, k]
        let grad: MatMul
        if add {
            if ops.weightGradAdd == nil {
                ops.weightGradAdd = MatMul(m: o, n: k, k: n, a: .transposed(o, t), b: .rows(k, t), c: .rows(k, .f32), accumulate: true,
                                           what: "Dense(\(k), \(o)) weight gradient")
            }
            grad = ops.weightGradAdd!
        } else {
            if ops.weightGrad == nil {
                ops.weightGrad = MatMul(m: o, n: k, k: n, a: .transposed(o, t), b: .rows(k, t), c: .rows(k, .f32),
                                        what: "Dense(\(k), \(o)) weight gradient")
            }
            grad = ops.weightGrad!
        }
        grad.run(dz, xs, dw)
        // dx[n, k] = dz[n, o] · W[o, k]
        if let dx {
            if ops.inputGrad == nil {
                ops.inputGrad = MatMul(m: n, n: k, k: o, a: .rows(o, t), b: .rows(k, t), c: .rows(k, .f32),
                                       what: "Dense(\(k), \(o)) input gradient")
            }
            ops.inputGrad!.run(dz, ws, dx)
        }
    }
}
