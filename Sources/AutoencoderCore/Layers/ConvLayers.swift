import CBLAS
import Foundation

/// 2-D convolution, stride 1, "same" zero padding (odd kernel, pad = kernel/2), with a fused
/// activation: y = f(conv(x, W) + b). W is [out, in, k, k] row-major, as torch.nn.Conv2d stores it.
///
/// Every pass is a few GEMMs per chunk of `nb` samples (N = nb*H*W columns), with one of two
/// lowerings, chosen per pass so that the expanded ("column") matrix is the cheaper one:
///
/// - input side: col = im2col(x) [in*k*k, N]; Z[out, N] = W · col.
///   Backward: dW += dZ · colᵀ; dcol = Wᵀ · dZ; dx = col2im(dcol).
/// - output side: T[out*k*k, N] = Wpᵀ · X[in, N]; y = shift-add(T).
///   Backward: V = im2col(dz) with flipped offsets [out*k*k, N]; dWᵀ += V · Xᵀ; dX = Wp · V.
///   Wp is W permuted to [in, out*k*k] (W itself when out == 1).
///
/// Forward uses the output side when out <= in: the 32→1 decoder head then expands 9 rows rather
/// than 288, and for 32→32 the M = out*k*k GEMM measured faster than W · col. Backward costs
/// out*k*k expanded rows on the output side against in*k*k (plus as many again for col2im when dx
/// is wanted) on the input side, so the 1→32 first layer uses the input side and 32→32 layers the
/// output side. The chunk matrices are workspaces allocated once in `reserve(maxBatch:)`.
public final class Conv2D: Layer {
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

    /// How a pass is lowered to GEMMs (see above).
    enum Lowering { case inputSide, outputSide }
    /// Overrides of the automatic choice of lowering, for tests and tuning.
    var forwardLowering: Lowering?
    var backwardLowering: Lowering?

    /// Target number of GEMM columns (samples × H × W) per chunk. One sample per chunk measured
    /// best with one-thread OpenBLAS here (its small-matrix kernels are fast, and nothing has to be
    /// gathered or scattered), so by default every chunk is a single sample.
    nonisolated(unsafe) static var targetColumns = 1

    /// Samples per chunk and the batch the workspaces were sized for.
    private(set) var chunk = 0
    private(set) var reservedBatch = -1
    /// [max(in, out)*k*k, chunk*HW]: im2col(x), dcol, T or V.
    private var colBuffer: FloatBuffer?
    /// [max(in, out), chunk*HW]: Z, dZ, X or dX gathered from the chunk's samples; not needed
    /// (nil) when a chunk is a single sample.
    private var matBuffer: FloatBuffer?
    /// [H*W] ones, for the bias gradient.
    private var onesBuffer: FloatBuffer?
    /// out > 1 only: W as [in, out*k*k].
    private var wPerm: FloatBuffer?
    /// The output side's dWᵀ, [out*k*k, in].
    private var gTrans: FloatBuffer?

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
        let hw = height * width, kk = kernel * kernel, wide = max(inChannels, outChannels)
        let nb = max(1, min(maxBatch, Conv2D.targetColumns / hw))
        chunk = nb
        reservedBatch = maxBatch
        colBuffer = FloatBuffer(wide * kk * nb * hw)
        matBuffer = nb > 1 ? FloatBuffer(wide * nb * hw) : nil
        let ones = FloatBuffer(hw)
        ones.pointer.update(repeating: 1, count: hw)
        onesBuffer = ones
        if outChannels > 1 { wPerm = FloatBuffer(weightCount) }
        gTrans = FloatBuffer(weightCount)
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "Conv2D.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        let col = colBuffer!.pointer
        let hw = height * width, kk = kernel * kernel
        let cin = inChannels, cout = outChannels
        let outputSide = (forwardLowering ?? (cout <= cin ? .outputSide : .inputSide)) == .outputSide
        let wp = outputSide ? permutedWeights() : w!
        var s0 = 0
        while s0 < n {
            let nb = min(chunk, n - s0), cols = nb * hw
            let xs = x + s0 * inputSize, ys = y + s0 * outputSize
            if outputSide {
                // X[in, N]; T[out*kk, N] = Wpᵀ · X; y = b + shift-add(T).
                let xm = asMatrix(xs, channels: cin, samples: nb)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(cout * kk), Int32(cols), Int32(cin),
                            1, wp, Int32(cout * kk), xm, Int32(cols), 0, col, Int32(cols))
                reduce(col, samples: nb, channels: cout, sign: -1, bias: b, into: ys)
            } else {
                // col = im2col(x) [in*kk, N]; Z[out, N] = W · col; y = Z + b.
                expand(xs, channels: cin, samples: nb, sign: 1, into: col)
                let z = nb == 1 ? ys : matBuffer!.pointer
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(cout), Int32(cols), Int32(cin * kk),
                            1, w, Int32(cin * kk), col, Int32(cols), 0, z, Int32(cols))
                if nb == 1 {
                    for o in 0..<cout {
                        let row = ys + o * hw, bo = b[o]
                        for p in 0..<hw { row[p] += bo }
                    }
                } else {
                    scatter(z, channels: cout, samples: nb, bias: b, into: ys)
                }
            }
            activation.apply(ys, nb * outputSize)
            s0 += nb
        }
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "Conv2D.backward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        let col = colBuffer!.pointer, ones = onesBuffer!.pointer
        let hw = height * width, kk = kernel * kernel
        let cin = inChannels, cout = outChannels
        // Expanded rows: out*kk on the output side; in*kk, plus in*kk for col2im, on the input side.
        let automatic: Lowering = cout < cin * (dx == nil ? 1 : 2) ? .outputSide : .inputSide
        let outputSide = (backwardLowering ?? automatic) == .outputSide
        let wp = outputSide && dx != nil ? permutedWeights() : w!
        // The output side accumulates dWᵀ as [out*kk, in] (the faster GEMM orientation) and adds
        // it into dW at the end.
        let gt = gTrans!.pointer
        if outputSide { gTrans!.zero() }
        var s0 = 0
        while s0 < n {
            let nb = min(chunk, n - s0), cols = nb * hw
            let xs = x + s0 * inputSize, dys = dy + s0 * outputSize
            // Chunk by chunk, so dz is still in cache for the GEMMs.
            activation.backward(y: y + s0 * outputSize, dy: dys, nb * outputSize)  // dy becomes dz
            // db[o] += Σ dz[s, o, :] (one GEMV per sample against a vector of ones)
            for s in 0..<nb {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(cout), Int32(hw), 1, dys + s * outputSize, Int32(hw),
                            ones, 1, 1, db, 1)
            }
            if outputSide {
                // V[out*kk, N] = im2col(dz) with flipped offsets.
                expand(dys, channels: cout, samples: nb, sign: -1, into: col)
                let xm = asMatrix(xs, channels: cin, samples: nb)
                // dWᵀ[out*kk, in] += V · Xᵀ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(cout * kk), Int32(cin), Int32(cols),
                            1, col, Int32(cols), xm, Int32(cols), 1, gt, Int32(cin))
                if let dx {
                    // dX[in, N] = Wp · V
                    let dxs = dx + s0 * inputSize
                    let dm = nb == 1 ? dxs : matBuffer!.pointer
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(cin), Int32(cols), Int32(cout * kk),
                                1, wp, Int32(cout * kk), col, Int32(cols), 0, dm, Int32(cols))
                    if nb > 1 { scatter(dm, channels: cin, samples: nb, bias: nil, into: dxs) }
                }
            } else {
                // dZ[out, N]; col = im2col(x).
                let dz = asMatrix(dys, channels: cout, samples: nb)
                expand(xs, channels: cin, samples: nb, sign: 1, into: col)
                // dW[out, in*kk] += dZ · colᵀ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(cout), Int32(cin * kk), Int32(cols),
                            1, dz, Int32(cols), col, Int32(cols), 1, dw, Int32(cin * kk))
                if let dx {
                    // dcol[in*kk, N] = Wᵀ · dZ; dx = col2im(dcol).
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(cin * kk), Int32(cols), Int32(cout),
                                1, w, Int32(cin * kk), dz, Int32(cols), 0, col, Int32(cols))
                    reduce(col, samples: nb, channels: cin, sign: 1, bias: nil, into: dx + s0 * inputSize)
                }
            }
            s0 += nb
        }
        if outputSide {
            for o in 0..<cout {
                for c in 0..<cin {
                    let dst = dw + (o * cin + c) * kk, src = gt + o * kk * cin + c
                    for t in 0..<kk { dst[t] += src[t &* cin] }
                }
            }
        }
    }

    // MARK: - Lowering kernels

    /// W [out, in, kk] as Wp [in, out*kk]; W itself when out == 1.
    private func permutedWeights() -> UnsafeMutablePointer<Float> {
        let cout = outChannels, cin = inChannels
        guard cout > 1, let buf = wPerm else { return w }
        let kk = kernel * kernel, wp = buf.pointer
        for o in 0..<cout {
            for c in 0..<cin {
                let src = w + (o * cin + c) * kk, dst = wp + (c * cout + o) * kk
                for t in 0..<kk { dst[t] = src[t] }
            }
        }
        return wp
    }

    /// im2col: col[(c*kk + ky*k + kx), s*HW + (i, j)] = img_s[c, i + sign*(ky-pad), j + sign*(kx-pad)],
    /// zero outside the image. `img` holds `samples` NCHW samples of `channels` planes.
    ///
    /// Each tap's row is one contiguous shifted copy of the plane (flat offset oy*W + ox) over the
    /// span of valid positions, after which the few positions that wrapped across a row edge, and
    /// those outside the span, are zeroed.
    private func expand(_ img: UnsafePointer<Float>, channels: Int, samples nb: Int, sign: Int,
                        into col: UnsafeMutablePointer<Float>) {
        let h = height, wd = width, hw = h * wd, k = kernel, pad = kernel / 2
        let ld = nb * hw
        for s in 0..<nb {
            for c in 0..<channels {
                let plane = img + (s * channels + c) * hw
                for ky in 0..<k {
                    let oy = sign * (ky - pad)
                    let yLo = max(0, -oy), yHi = min(h, h - oy)
                    for kx in 0..<k {
                        let ox = sign * (kx - pad)
                        let dst = col + ((c * k + ky) * k + kx) * ld + s * hw
                        guard yLo < yHi, abs(ox) < wd else {
                            dst.update(repeating: 0, count: hw)
                            continue
                        }
                        let xLo = max(0, -ox), xHi = min(wd, wd - ox)
                        let q0 = yLo * wd + xLo, q1 = (yHi - 1) * wd + xHi, off = oy * wd + ox
                        // Bulk copies and fills; the edge loops use wrapping index arithmetic
                        // (the indices are in range by construction), so no overflow checks
                        // sit in the inner loops.
                        dst.update(repeating: 0, count: q0)
                        (dst + q0).update(from: plane + (q0 + off), count: q1 - q0)
                        (dst + q1).update(repeating: 0, count: hw - q1)
                        if ox > 0 {
                            for i in yLo..<(yHi - 1) { let r = dst + i &* wd; for j in xHi..<wd { r[j] = 0 } }
                        } else if ox < 0 {
                            for i in (yLo + 1)..<yHi { let r = dst + i &* wd; for j in 0..<xLo { r[j] = 0 } }
                        }
                    }
                }
            }
        }
    }

    /// col2im, the adjoint of `expand`: img_s[c, i, j] = bias[c] + Σ over taps (ky, kx) of
    /// col[(c, ky, kx), s*HW + (i - sign*(ky-pad), j - sign*(kx-pad))] where that position is inside
    /// the image. Overwrites `img`. Uses `col` as scratch: entries that would wrap across a row edge
    /// are zeroed so that every tap is one contiguous shifted add.
    private func reduce(_ col: UnsafeMutablePointer<Float>, samples nb: Int, channels: Int, sign: Int,
                        bias: UnsafePointer<Float>?, into img: UnsafeMutablePointer<Float>) {
        let h = height, wd = width, hw = h * wd, k = kernel, pad = kernel / 2
        let ld = nb * hw
        for s in 0..<nb {
            for c in 0..<channels {
                let plane = img + (s * channels + c) * hw
                // The centre tap covers every position: it initialises the plane.
                let centre = col + ((c * k + pad) * k + pad) * ld + s * hw
                let bc = bias?[c] ?? 0
                for q in 0..<hw { plane[q] = centre[q] + bc }
                for ky in 0..<k {
                    // plane[i, j] += row[i + oy, j + ox]
                    let oy = -sign * (ky - pad)
                    let yLo = max(0, -oy), yHi = min(h, h - oy)
                    for kx in 0..<k where ky != pad || kx != pad {
                        let ox = -sign * (kx - pad)
                        guard yLo < yHi, abs(ox) < wd else { continue }
                        let xLo = max(0, -ox), xHi = min(wd, wd - ox)
                        let q0 = yLo * wd + xLo, q1 = (yHi - 1) * wd + xHi, off = oy * wd + ox
                        let row = col + ((c * k + ky) * k + kx) * ld + s * hw
                        let shifted = row + off  // shifted[q] = row[q + off], q in q0..<q1
                        if ox > 0 {
                            for i in yLo..<(yHi - 1) { let r = shifted + i &* wd; for j in xHi..<wd { r[j] = 0 } }
                        } else if ox < 0 {
                            for i in (yLo + 1)..<yHi { let r = shifted + i &* wd; for j in 0..<xLo { r[j] = 0 } }
                        }
                        for q in q0..<q1 { plane[q] += shifted[q] }
                    }
                }
            }
        }
    }

    /// The chunk's samples as one [channels, nb*HW] matrix: the sample itself when nb == 1,
    /// else gathered into the matrix workspace.
    private func asMatrix(_ img: UnsafePointer<Float>, channels: Int, samples nb: Int) -> UnsafePointer<Float> {
        if nb == 1 { return img }
        let mat = matBuffer!.pointer
        gather(img, channels: channels, samples: nb, into: mat)
        return UnsafePointer(mat)
    }

    /// mat[c, s*HW + p] = img_s[c, p]: NCHW samples to one [channels, nb*HW] matrix.
    private func gather(_ img: UnsafePointer<Float>, channels: Int, samples nb: Int,
                        into mat: UnsafeMutablePointer<Float>) {
        let hw = height * width, ld = nb * hw
        for s in 0..<nb {
            for c in 0..<channels {
                (mat + c * ld + s * hw).update(from: img + (s * channels + c) * hw, count: hw)
            }
        }
    }

    /// img_s[c, p] = mat[c, s*HW + p] + bias[c]: the inverse of `gather`, plus an optional bias.
    private func scatter(_ mat: UnsafePointer<Float>, channels: Int, samples nb: Int,
                         bias: UnsafePointer<Float>?, into img: UnsafeMutablePointer<Float>) {
        let hw = height * width, ld = nb * hw
        for s in 0..<nb {
            for c in 0..<channels {
                let src = mat + c * ld + s * hw, dst = img + (s * channels + c) * hw
                if let bias {
                    let bc = bias[c]
                    for p in 0..<hw { dst[p] = src[p] + bc }
                } else {
                    dst.update(from: src, count: hw)
                }
            }
        }
    }
}

/// 2×2 max pooling, stride 2 (H and W even). Forward records, per output, the index of its
/// maximum within the sample (c*H*W + i*W + j; the first maximum in scan order wins, as in
/// PyTorch); backward routes dy there and writes zeros elsewhere.
public final class MaxPool2D: Layer {
    public let channels: Int
    public let height: Int
    public let width: Int
    public let inputSize: Int
    public let outputSize: Int
    private var argmax: IndexBuffer?
    private(set) var reservedBatch = -1

    /// A fixed-size, 64-byte aligned Int32 workspace, allocated once and zeroed.
    private final class IndexBuffer {
        let count: Int
        let pointer: UnsafeMutablePointer<Int32>

        init(_ count: Int) {
            self.count = count
            let bytes = max(count, 1) * MemoryLayout<Int32>.stride
            let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            pointer = raw.bindMemory(to: Int32.self, capacity: max(count, 1))
        }

        deinit { UnsafeMutableRawPointer(pointer).deallocate() }
    }

    public init(channels: Int, height: Int, width: Int) {
        precondition(height % 2 == 0 && width % 2 == 0, "MaxPool2D: height and width must be even")
        self.channels = channels
        self.height = height
        self.width = width
        inputSize = channels * height * width
        outputSize = channels * (height / 2) * (width / 2)
    }

    public var parameterShapes: [(name: String, shape: [Int])] { [] }
    public var macsPerSample: Int { 0 }
    public var torchModuleCount: Int { 1 }
    public var torchModules: [String] { ["nn.MaxPool2d(2)"] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {}
    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {}

    public func reserve(maxBatch: Int) {
        argmax = IndexBuffer(maxBatch * outputSize)
        reservedBatch = maxBatch
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= reservedBatch, "MaxPool2D.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        let idx = argmax!.pointer
        let wd = width, oh = height / 2, ow = width / 2
        for s in 0..<n {
            let xs = x + s * inputSize, ys = y + s * outputSize, ids = idx + s * outputSize
            for c in 0..<channels {
                for i in 0..<oh {
                    let base = c * height * wd + 2 * i * wd
                    let r0 = xs + base, r1 = r0 + wd
                    let o = (c * oh + i) * ow
                    let yo = ys + o, io = ids + o
                    for j in 0..<ow {  // wrapping arithmetic: indices in range by construction
                        let j2 = j &<< 1
                        var m = r0[j2], at = base &+ j2
                        if r0[j2 &+ 1] > m { m = r0[j2 &+ 1]; at = base &+ j2 &+ 1 }
                        if r1[j2] > m { m = r1[j2]; at = base &+ wd &+ j2 }
                        if r1[j2 &+ 1] > m { m = r1[j2 &+ 1]; at = base &+ wd &+ j2 &+ 1 }
                        yo[j] = m
                        io[j] = Int32(truncatingIfNeeded: at)
                    }
                }
            }
        }
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0, let dx else { return }
        precondition(n <= reservedBatch, "MaxPool2D.backward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        let idx = argmax!.pointer
        // Per sample (so the zeroed block is still in cache): zero dx, then route dy to the argmaxes.
        for s in 0..<n {
            let dxs = dx + s * inputSize, dys = dy + s * outputSize, ids = idx + s * outputSize
            dxs.update(repeating: 0, count: inputSize)
            for o in 0..<outputSize { dxs[Int(ids[o])] = dys[o] }
        }
    }
}

/// Nearest-neighbour upsampling by 2: y[c, 2i+a, 2j+b] = x[c, i, j]. Backward sums the four
/// gradients of each input pixel.
public final class Upsample2D: Layer {
    public let channels: Int
    public let height: Int
    public let width: Int
    public let inputSize: Int
    public let outputSize: Int

    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
        inputSize = channels * height * width
        outputSize = channels * (2 * height) * (2 * width)
    }

    public var parameterShapes: [(name: String, shape: [Int])] { [] }
    public var macsPerSample: Int { 0 }
    public var torchModuleCount: Int { 1 }
    public var torchModules: [String] { ["nn.Upsample(scale_factor=2)"] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {}
    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {}
    public func reserve(maxBatch: Int) {}

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        let wd = width, ow = 2 * width
        for r in 0..<(n * channels * height) {  // one input row -> two output rows
            let src = x + r * wd, d0 = y + 2 * r * ow, d1 = d0 + ow
            for j in 0..<wd {
                let v = src[j], j2 = j &<< 1
                d0[j2] = v; d0[j2 &+ 1] = v
            }
            d1.update(from: d0, count: ow)
        }
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0, let dx else { return }
        let wd = width, ow = 2 * width
        for r in 0..<(n * channels * height) {
            let d = dx + r * wd, g0 = dy + 2 * r * ow, g1 = g0 + ow
            for j in 0..<wd {
                let j2 = j &<< 1
                d[j] = (g0[j2] + g0[j2 &+ 1]) + (g1[j2] + g1[j2 &+ 1])
            }
        }
    }
}
