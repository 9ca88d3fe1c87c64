import CBLAS
import CKernels
import Foundation

/// Weight initialisation schemes.
public enum InitScheme: String, Codable, CaseIterable, Sendable {
    /// PyTorch nn.Linear / nn.Conv2d default: W, b ~ U(±1/sqrt(fan_in)).
    case torch
    /// Keras glorot_uniform: W ~ U(±sqrt(6/(fan_in+fan_out))), b = 0.
    case glorot
}

/// A layer with a hand-written forward and backward. Parameters live in the model's one flat
/// buffer; a layer holds pointers into it (and into the flat gradient buffer), never arrays.
///
/// Data layout: a batch is `batch` samples of `inputSize` floats, sample-major (NCHW per sample).
public protocol Layer: AnyObject {
    /// Floats per sample in and out.
    var inputSize: Int { get }
    var outputSize: Int { get }
    /// Parameter tensors in PyTorch order and shape, e.g. [("weight", [out, in]), ("bias", [out])].
    var parameterShapes: [(name: String, shape: [Int])] { get }
    /// Forward multiply-adds per sample (for GFLOP/s figures).
    var macsPerSample: Int { get }
    /// How many nn.Sequential modules this layer stands for (Linear + ReLU = 2), for state_dict names.
    var torchModuleCount: Int { get }
    /// The PyTorch modules this layer stands for, e.g. ["nn.Linear(784, 128)", "nn.ReLU()"].
    var torchModules: [String] { get }

    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>)
    func initialize(_ scheme: InitScheme, rng: inout SplitMix64)
    /// Size the layer's workspaces once, for batches up to `maxBatch`.
    func reserve(maxBatch: Int)
    /// y = layer(x). x: [batch, inputSize], y: [batch, outputSize].
    func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int)
    /// Given dL/dy (may be overwritten), *adds* dL/dparams into the gradient buffer and writes
    /// dL/dx into dx when dx is not nil.
    func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                  dx: UnsafeMutablePointer<Float>?, batch: Int)
}

extension Layer {
    public var parameterCount: Int {
        parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
    }
}

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
