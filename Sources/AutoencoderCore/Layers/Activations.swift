import CKernels
import Foundation

/// Element-wise activations. Each layer applies its activation in place after the affine part
/// (fused), and its backward turns dL/dy into dL/dz using the stored output y only.
public enum Activation: String, Codable, CaseIterable, Sendable {
    case relu, leakyRelu = "leaky-relu", tanh, sigmoid, identity

    public static let leakySlope: Float = 0.01  // torch.nn.LeakyReLU default

    var kernelKind: Int32 {
        switch self {
        case .relu: return 0
        case .leakyRelu: return 1
        case .tanh: return 2
        case .sigmoid: return 3
        case .identity: return -1
        }
    }

    /// y = f(z), in place.
    @inline(__always)
    public func apply(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if self != .identity { aet_act_forward(p, n, kernelKind, Activation.leakySlope) }
    }

    /// dz = dy * f'(z), in place on dy, written from y = f(z).
    @inline(__always)
    public func backward(y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, _ n: Int) {
        if self != .identity { aet_act_backward(y, dy, n, kernelKind, Activation.leakySlope) }
    }

    /// The PyTorch module that follows a Linear/Conv in nn.Sequential, if any.
    public var torchModule: String? {
        switch self {
        case .identity: return nil
        case .relu: return "nn.ReLU()"
        case .leakyRelu: return "nn.LeakyReLU()"
        case .tanh: return "nn.Tanh()"
        case .sigmoid: return "nn.Sigmoid()"
        }
    }
}

/// Numerically safe logistic function.
@inline(__always) public func logistic(_ z: Float) -> Float {
    if z >= 0 { return 1 / (1 + expf(-z)) }
    let e = expf(z)
    return e / (1 + e)
}
