import CBLAS
import CKernels
import Foundation

/// Fully connected layer with a fused activation: y = f(x W^T + b). W is [out, in] row-major,
/// as torch.nn.Linear stores it.
public final class Dense: Layer {
    public let inputSize: Int
    public let outputSize: Int
    public let activation: Activation
    var w: UnsafeMutablePointer<Float>!
    var b: UnsafeMutablePointer<Float>!
    var dw: UnsafeMutablePointer<Float>!
    var db: UnsafeMutablePointer<Float>!
    /// Backward writes dW and db (sgemm β = 0) instead of adding to them, so the model need not
    /// zero this layer's gradients before each step. Off when something else adds to dW first
    /// (the contractive penalty).
    public var overwritesGradients = false

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

    public func reserve(maxBatch: Int) {}

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        let o = outputSize, k = inputSize
        // y[n, o] = b (broadcast), then y += x[n, k] · W[o, k]^T
        aet_broadcast_rows(y, b, n, o)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(o), Int32(k),
                    1, x, Int32(k), w, Int32(k), 1, y, Int32(o))
        activation.apply(y, n * o)
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        let o = outputSize, k = inputSize
        activation.backward(y: y, dy: dy, n * o)  // dy becomes dz
        // dW[o, k] (+)= dz[n, o]^T · x[n, k]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(o), Int32(k), Int32(n),
                    1, dy, Int32(o), x, Int32(k), overwritesGradients ? 0 : 1, dw, Int32(k))
        // db[o] (+)= column sums of dz
        if overwritesGradients { db.update(repeating: 0, count: o) }
        aet_colsum_add(db, dy, n, o)
        // dx[n, k] = dz[n, o] · W[o, k]
        if let dx {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(k), Int32(o),
                        1, dy, Int32(o), w, Int32(k), 0, dx, Int32(k))
        }
    }
}
