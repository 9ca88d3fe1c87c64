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

    /// Arithmetic of the layer's products (set before `reserve`).
    var precision: Precision { get set }

    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>)
    func initialize(_ scheme: InitScheme, rng: inout SplitMix64)
    /// Size the layer's workspaces once, for batches up to `maxBatch`. Primitives are created on
    /// the first pass of each batch size and kept.
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
