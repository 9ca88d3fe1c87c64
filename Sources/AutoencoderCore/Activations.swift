import Foundation

/// Element-wise activations. Each layer applies its activation in place after the affine part
/// (fused), and its backward turns dL/dy into dL/dz using the stored output y only.
public enum Activation: String, Codable, CaseIterable, Sendable {
    case relu, leakyRelu = "leaky-relu", tanh, sigmoid, identity

    public static let leakySlope: Float = 0.01  // torch.nn.LeakyReLU default

    /// y = f(z), in place.
    @inline(__always)
    public func apply(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        switch self {
        case .identity: return
        case .relu: for i in 0..<n { p[i] = max(p[i], 0) }
        case .leakyRelu:
            let a = Activation.leakySlope
            for i in 0..<n { let v = p[i]; p[i] = v > 0 ? v : a * v }
        case .tanh: for i in 0..<n { p[i] = Foundation.tanh(p[i]) }
        case .sigmoid: for i in 0..<n { p[i] = logistic(p[i]) }
        }
    }

    /// dz = dy * f'(z), in place on dy, written from y = f(z).
    @inline(__always)
    public func backward(y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, _ n: Int) {
        switch self {
        case .identity: return
        case .relu: for i in 0..<n { dy[i] = y[i] > 0 ? dy[i] : 0 }
        case .leakyRelu:
            let a = Activation.leakySlope
            for i in 0..<n { dy[i] = y[i] > 0 ? dy[i] : a * dy[i] }
        case .tanh: for i in 0..<n { dy[i] *= 1 - y[i] * y[i] }
        case .sigmoid: for i in 0..<n { dy[i] *= y[i] * (1 - y[i]) }
        }
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
