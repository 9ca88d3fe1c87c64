import CKernels
import Foundation

/// A layer over images (convolution, pooling, upsampling). Its input and output are NCHW f32 by
/// default; between two such layers the model may choose another memory format (channels
/// innermost, bf16 elements with `--precision bf16`), set before `reserve`. The gradients that
/// cross a boundary use the boundary's format too.
protocol SpatialLayer: Layer {
    var inputFormat: TensorFormat { get set }
    var outputFormat: TensorFormat { get set }
    var inputChannels: Int { get }
    var outputChannels: Int { get }
}

/// 2-D convolution, stride 1, "same" zero padding (odd kernel, pad = kernel/2), with a fused
/// activation: y = f(conv(x, W) + b). W is [out, in, k, k] row-major, as torch.nn.Conv2d stores
/// it, and stays so in the flat parameter and gradient buffers.
///
/// Forward, backward data and backward weights are oneDNN primitives (dnnl_ops.c), created once
/// per batch size: oneDNN's direct convolution for 16 or more output channels (weights reordered
/// into its layout each forward, the bias and activation fused), and for fewer output channels
/// (the 32→1 decoder head, which the convolution kernels would pad to 16 channels) three oneDNN
/// matrix products around a shift-add. Backward applies f' to dy in place, then computes dW, db
/// and, unless the layer is the model's first, dx.
public final class Conv2D: SpatialLayer {
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Int
    public let height: Int
    public let width: Int
    public let activation: Activation
    public let inputSize: Int
    public let outputSize: Int
    var w: UnsafeMutablePointer<Float>!
    var b: UnsafeMutablePointer<Float>!
    var dw: UnsafeMutablePointer<Float>!
    var db: UnsafeMutablePointer<Float>!
    public var precision: Precision = .f32
    var inputFormat = TensorFormat.nchw
    var outputFormat = TensorFormat.nchw
    /// False for the model's first layer: no backward-data primitive is made, dx must be nil.
    public var needsInputGradient = true
    /// Backward writes dW and db instead of adding to them (the model then skips zeroing them).
    public var overwritesGradients = false
    private(set) var reservedBatch = -1

    private final class Ops {
        let p: OpaquePointer
        init(_ p: OpaquePointer) { self.p = p }
        deinit { aet_conv_free(p) }
    }
    private var cache = PrimitiveCache<Ops>()

    public init(inChannels: Int, outChannels: Int, kernel: Int, height: Int, width: Int,
                activation: Activation) {
        precondition(kernel > 0 && kernel % 2 == 1, "Conv2D: kernel must be odd")
        precondition(inChannels > 0 && outChannels > 0 && height > 0 && width > 0)
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.height = height
        self.width = width
        self.activation = activation
        inputSize = inChannels * height * width
        outputSize = outChannels * height * width
    }

    public var padding: Int { kernel / 2 }
    var weightCount: Int { outChannels * inChannels * kernel * kernel }
    var inputChannels: Int { inChannels }
    var outputChannels: Int { outChannels }

    public var parameterShapes: [(name: String, shape: [Int])] {
        [("weight", [outChannels, inChannels, kernel, kernel]), ("bias", [outChannels])]
    }
    public var macsPerSample: Int { outChannels * height * width * inChannels * kernel * kernel }
    public var torchModuleCount: Int { activation == .identity ? 1 : 2 }
    public var torchModules: [String] {
        ["nn.Conv2d(\(inChannels), \(outChannels), \(kernel), padding=\(padding))"]
            + (activation.torchModule.map { [$0] } ?? [])
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        w = parameters
        b = parameters + weightCount
        dw = gradients
        db = gradients + weightCount
    }

    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {
        let kk = kernel * kernel
        let fanIn = inChannels * kk, fanOut = outChannels * kk
        switch scheme {
        case .torch:
            let bound = 1 / Float(fanIn).squareRoot()
            for i in 0..<weightCount { w[i] = rng.uniform(-bound, bound) }
            for i in 0..<outChannels { b[i] = rng.uniform(-bound, bound) }
        case .glorot:
            let limit = (6 / Float(fanIn + fanOut)).squareRoot()
            for i in 0..<weightCount { w[i] = rng.uniform(-limit, limit) }
            for i in 0..<outChannels { b[i] = 0 }
        }
    }

    public func reserve(maxBatch: Int) {
        reservedBatch = maxBatch
        cache.removeAll()
    }

    private func ops(_ n: Int) -> OpaquePointer {
        cache.get(n) {
            Ops(DNNL.created(aet_conv_create(n, inChannels, outChannels, height, width, kernel,
                                             inputFormat.layout.rawValue, inputFormat.type.code,
                                             outputFormat.layout.rawValue, outputFormat.type.code,
                                             precision.code, activation.kernelKind, needsInputGradient ? 1 : 0),
                             "\(torchModules[0]) at batch \(n)"))
        }.p
    }

    /// oneDNN's implementations for a batch of n (forward, weight and input gradient).
    func implementation(batch n: Int) -> String { String(cString: aet_conv_impl(ops(n))) }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "Conv2D.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        aet_conv_forward(ops(n), x, w, b, y)
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "Conv2D.backward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        precondition(dx == nil || needsInputGradient, "Conv2D.backward: dx requested from a layer made without input gradient")
        // dz = dy·f'(y), in place, in the output's format (element-wise, so any layout).
        aet_act_backward_typed(y, dy, n * outputSize, activation.kernelKind, Activation.leakySlope, outputFormat.type.code)
        aet_conv_backward(ops(n), x, w, dy, dw, db, overwritesGradients ? 0 : 1, dx)
    }
}

/// 2×2 max pooling, stride 2 (H and W even), as oneDNN's pooling primitive: forward keeps the
/// position of each maximum (the first in scan order on ties, as in PyTorch), backward routes dy
/// there and writes zeros elsewhere.
public final class MaxPool2D: SpatialLayer {
    public let channels: Int
    public let height: Int
    public let width: Int
    public let inputSize: Int
    public let outputSize: Int
    public var precision: Precision = .f32
    var inputFormat = TensorFormat.nchw
    var outputFormat = TensorFormat.nchw
    private(set) var reservedBatch = -1
    private var cache = PrimitiveCache<SpatialOps>()

    public init(channels: Int, height: Int, width: Int) {
        precondition(height % 2 == 0 && width % 2 == 0, "MaxPool2D: height and width must be even")
        self.channels = channels
        self.height = height
        self.width = width
        inputSize = channels * height * width
        outputSize = channels * (height / 2) * (width / 2)
    }

    var inputChannels: Int { channels }
    var outputChannels: Int { channels }
    public var parameterShapes: [(name: String, shape: [Int])] { [] }
    public var macsPerSample: Int { 0 }
    public var torchModuleCount: Int { 1 }
    public var torchModules: [String] { ["nn.MaxPool2d(2)"] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {}
    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {}

    public func reserve(maxBatch: Int) {
        reservedBatch = maxBatch
        cache.removeAll()
    }

    private func ops(_ n: Int) -> OpaquePointer {
        cache.get(n) {
            SpatialOps(DNNL.created(aet_pool_create(n, channels, height, width, inputFormat.layout.rawValue, inputFormat.type.code,
                                                    outputFormat.layout.rawValue, outputFormat.type.code, inputFormat.type.code),
                                    "max pooling at batch \(n)"))
        }.p
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "MaxPool2D.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        aet_spatial_forward(ops(n), x, y)
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0, let dx else { return }
        precondition(n <= reservedBatch, "MaxPool2D.backward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        aet_spatial_backward(ops(n), dy, dx)
    }
}

/// Nearest-neighbour upsampling by 2, y[c, 2i+a, 2j+b] = x[c, i, j], as oneDNN's resampling
/// primitive; backward sums the four gradients of each input pixel.
public final class Upsample2D: SpatialLayer {
    public let channels: Int
    public let height: Int
    public let width: Int
    public let inputSize: Int
    public let outputSize: Int
    public var precision: Precision = .f32
    var inputFormat = TensorFormat.nchw
    var outputFormat = TensorFormat.nchw
    private(set) var reservedBatch = -1
    private var cache = PrimitiveCache<SpatialOps>()

    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
        inputSize = channels * height * width
        outputSize = channels * (2 * height) * (2 * width)
    }

    var inputChannels: Int { channels }
    var outputChannels: Int { channels }
    public var parameterShapes: [(name: String, shape: [Int])] { [] }
    public var macsPerSample: Int { 0 }
    public var torchModuleCount: Int { 1 }
    public var torchModules: [String] { ["nn.Upsample(scale_factor=2)"] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {}
    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {}

    public func reserve(maxBatch: Int) {
        reservedBatch = maxBatch
        cache.removeAll()
    }

    private func ops(_ n: Int) -> OpaquePointer {
        cache.get(n) {
            SpatialOps(DNNL.created(aet_upsample_create(n, channels, height, width, inputFormat.layout.rawValue, inputFormat.type.code,
                                                        outputFormat.layout.rawValue, outputFormat.type.code, inputFormat.type.code),
                                    "upsampling at batch \(n)"))
        }.p
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "Upsample2D.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        aet_spatial_forward(ops(n), x, y)
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0, let dx else { return }
        precondition(n <= reservedBatch, "Upsample2D.backward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        aet_spatial_backward(ops(n), dy, dx)
    }
}

/// A pooling or upsampling primitive group (dnnl_ops.c).
final class SpatialOps {
    let p: OpaquePointer
    init(_ p: OpaquePointer) { self.p = p }
    deinit { aet_spatial_free(p) }
}

/// Memory formats of the boundaries between consecutive spatial layers of one chain (the
/// encoder, or the decoder). A boundary with a multiple of 16 channels keeps channels innermost,
/// as oneDNN's direct convolution, pooling and resampling kernels read them: channels-last
/// (NHWC) when a convolution with fewer than 16 output channels follows later in the chain (its
/// matmul lowering reads NHWC, and NHWC upsampling measured faster), else oneDNN's blocked layout
/// with 16 channels innermost (the 1→32 first layer's weight gradient is 10× slower in NHWC).
/// Without AVX-512, oneDNN's kernels have no 16-channel blocks (they would run its reference
/// code): NHWC. Other boundaries are NCHW. With bf16 precision the elements there are bf16. The
/// chain's ends (the model's input, code and output) stay NCHW f32.
enum SpatialFormats {
    static func assign(_ layers: [Layer], precision: Precision) {
        for l in layers { l.precision = precision }
        for i in 0..<max(0, layers.count - 1) {
            guard let a = layers[i] as? SpatialLayer, let b = layers[i + 1] as? SpatialLayer else { continue }
            let c = a.outputChannels
            let loweredLater = layers[(i + 1)...].contains { ($0 as? Conv2D).map { $0.outChannels < 16 } ?? false }
            let layout: TensorFormat.Layout = c % 16 != 0 ? .nchw : (loweredLater || !DNNL.avx512 ? .nhwc : .blocked16)
            let f = TensorFormat(layout: layout, type: precision)
            a.outputFormat = f
            b.inputFormat = f
        }
    }
}
