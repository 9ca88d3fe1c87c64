import Foundation

/// Training objective options that shape the loss (all part of the resolved config).
public struct Objective: Codable, Equatable, Sendable {
    public var loss: LossKind = .mse
    /// sparse-l1: λ in λ·mean|h|; sparse-kl: weight of Σ_j KL(ρ‖ρ̂_j).
    public var sparsityWeight: Float = 1e-3
    /// sparse-kl: ρ.
    public var sparsityTarget: Float = 0.05
    /// contractive: λ in λ·‖J_f(x)‖²_F.
    public var contractiveWeight: Float = 1e-4
    /// vae: β on the KL term.
    public var beta: Float = 1
    public init() {}
}

/// One named parameter tensor inside the flat buffer (PyTorch state_dict name and shape).
public struct ParameterTensor: Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// Sums a training step returns (before the all-reduce).
public struct StepSums {
    /// Σ over local samples of the per-sample objective (reconstruction + penalties).
    public var loss: Double = 0
    /// Σ of the reconstruction term alone, and of the KL / penalty term alone.
    public var recon: Double = 0
    public var penalty: Double = 0
}

/// An autoencoder: encoder layers, optional VAE sampling, decoder layers, loss head.
/// All parameters live in one flat buffer (and gradients in another, with the same layout plus
/// a few extra slots that ride along in the gradient all-reduce). Every activation buffer is
/// sized once for `maxBatch` samples.
public final class Autoencoder {
    public let spec: ModelSpec
    public let objective: Objective
    public let encoder: [Layer]
    public let decoder: [Layer]
    public let parameterCount: Int
    public let tensors: [ParameterTensor]
    /// Offset of each layer's parameters in the flat buffer (encoder layers, then decoder layers).
    let encoderOffsets: [Int]
    /// Gradient ranges that backward adds into (not Dense overwrites): zeroed by `prepareGrads`.
    let zeroedRanges: [Range<Int>]
    let decoderOffsets: [Int]
    public let maxBatch: Int
    /// Arithmetic of the layers' products (`--precision`); parameters and gradients are f32 either way.
    public let precision: Precision
    public let inputDim: Int
    public let latent: Int
    /// Extra Float slots after the gradients, summed by the same all-reduce (loss sums, counts, flags).
    public static let extraSlots = 8

    public let params: FloatBuffer
    public private(set) var grads: FloatBuffer
    /// Corrupted network input (denoising) and clean reconstruction target, [maxBatch, 784].
    /// Without noise the network reads `target` directly (no copy).
    public let input: FloatBuffer
    public let target: FloatBuffer
    /// True when `input` holds a corrupted copy of `target` for this batch.
    public var corrupted = false
    public var networkInput: UnsafeMutablePointer<Float> { corrupted ? input.pointer : target.pointer }
    /// sigmoid(logits): the reconstruction.
    public let output: FloatBuffer
    let encActs: [FloatBuffer]
    let decActs: [FloatBuffer]
    /// VAE: z and ε, [maxBatch, latent].
    let z: FloatBuffer
    let eps: FloatBuffer
    let gradA: FloatBuffer
    let gradB: FloatBuffer
    /// Column sums of the code over the local batch (sparse-kl), then over the global batch.
    public let codeStats: FloatBuffer
    /// Contractive penalty workspaces: ‖W_j‖² and Σ_s (h(1−h))² per code unit.
    let rowNorm: FloatBuffer
    let colAcc: FloatBuffer

    public init(spec: ModelSpec, objective: Objective, maxBatch: Int, precision: Precision = .f32) throws {
        self.spec = spec
        self.objective = objective
        self.maxBatch = max(1, maxBatch)
        self.precision = precision
        let layout = try Autoencoder.layout(spec)
        inputDim = layout.inputDim
        encoder = layout.encoder
        decoder = layout.decoder
        latent = layout.latent
        tensors = layout.tensors
        parameterCount = layout.parameterCount
        let offset = parameterCount
        // Precision and the memory formats between spatial layers, before the workspaces are sized.
        SpatialFormats.assign(encoder, precision: precision)
        SpatialFormats.assign(decoder, precision: precision)
        (encoder.first as? Conv2D)?.needsInputGradient = false
        params = FloatBuffer(offset)
        grads = FloatBuffer(offset + Autoencoder.extraSlots)
        var p = 0
        var offsets: [Int] = []
        for l in encoder + decoder {
            offsets.append(p)
            l.bind(parameters: params.pointer + p, gradients: grads.pointer + p)
            l.reserve(maxBatch: self.maxBatch)
            p += l.parameterCount
        }
        // Dense and Conv2D layers overwrite their gradients; only the others are zeroed before a step.
        var zeroed: [Range<Int>] = []
        for (l, off) in zip(encoder + decoder, offsets) where l.parameterCount > 0 {
            if let d = l as? Dense, !(spec.penalty == .contractive && l === encoder.last) {
                d.overwritesGradients = true
            } else if let c = l as? Conv2D {
                c.overwritesGradients = true
            } else {
                zeroed.append(off..<(off + l.parameterCount))
            }
        }
        zeroedRanges = zeroed
        encoderOffsets = Array(offsets.prefix(encoder.count))
        decoderOffsets = Array(offsets.suffix(decoder.count))
        let mb = self.maxBatch
        input = FloatBuffer(mb * inputDim)
        target = FloatBuffer(mb * inputDim)
        output = FloatBuffer(mb * inputDim)
        encActs = encoder.map { FloatBuffer(mb * $0.outputSize) }
        decActs = decoder.map { FloatBuffer(mb * $0.outputSize) }
        z = FloatBuffer(spec.variational ? mb * latent : 0)
        eps = FloatBuffer(spec.variational ? mb * latent : 0)
        let widest = (encoder + decoder).map { max($0.inputSize, $0.outputSize) }.max()!
        gradA = FloatBuffer(mb * widest)
        gradB = FloatBuffer(mb * widest)
        codeStats = FloatBuffer(latent)
        rowNorm = FloatBuffer(spec.penalty == .contractive ? latent : 0)
        colAcc = FloatBuffer(spec.penalty == .contractive ? latent : 0)
    }

    /// A model's layers, code size and parameter tensors, built and checked from a spec without
    /// allocating any buffer: every layer size is positive and bounded, the shapes chain, the
    /// decoder ends in an image. Any defect is a one-line AETError (usage), never a trap, so a
    /// spec read from a file is safe to check.
    public struct Layout {
        public let encoder: [Layer]
        public let decoder: [Layer]
        public let inputDim: Int
        public let latent: Int
        public let tensors: [ParameterTensor]
        public let parameterCount: Int

        /// Bytes a model needs for `maxBatch` samples per step: parameters, gradients and the two
        /// Adam moments (and one more copy for the shared exchange's published parameters), plus
        /// the activation buffers and layer workspaces. An estimate, in Double so it cannot overflow.
        public func estimatedBytes(maxBatch: Int) -> Double {
            let b = Double(max(1, maxBatch))
            var perSample = Double(3 * inputDim)  // input, target, output
            var fixed = 5 * Double(parameterCount)
            var widest = 0
            for l in encoder + decoder {
                perSample += Double(l.outputSize)
                widest = max(widest, l.inputSize, l.outputSize)
                if let c = l as? Conv2D {
                    fixed += Double(max(c.inChannels, c.outChannels) * c.kernel * c.kernel) * Double(c.height * c.width)
                        + 2 * Double(c.outChannels * c.inChannels * c.kernel * c.kernel)
                } else if l is MaxPool2D {
                    perSample += Double(l.outputSize)
                } else if let e = l as? LSTMEncoder {
                    perSample += Double(28 * 12 * e.hidden)
                } else if let d = l as? LSTMDecoder {
                    perSample += Double(28 * 12 * d.hidden + 4 * d.hidden)
                }
            }
            perSample += 2 * Double(widest) + 2 * Double(latent)
            return 4 * (fixed + b * perSample)
        }
    }

    /// Largest number of floats one layer may output per sample (a sanity bound; 28×28×32 = 25,088).
    public static let maxLayerFloats = 1 << 28
    /// Largest parameter count a spec may describe (2^40: 4 TB of Float32 per copy).
    public static let maxParameters = 1 << 40

    public static func layout(_ spec: ModelSpec) throws -> Layout {
        func fail(_ m: String) -> AETError { AETError.usage("model \(spec.name): \(m)") }
        guard !spec.encoder.isEmpty else { throw fail("the encoder has no layers") }
        guard !spec.decoder.isEmpty else { throw fail("the decoder has no layers") }
        for l in spec.encoder + spec.decoder {
            switch l {
            case .dense(let units, _):
                guard units > 0 && units <= maxLayerFloats else { throw fail("dense layer of \(units) units (must be 1...\(maxLayerFloats))") }
            case .conv(let ch, let k, _):
                guard ch > 0 && ch <= 1 << 16 else { throw fail("conv layer of \(ch) channels (must be 1...65536)") }
                guard k > 0 && k % 2 == 1 && k <= 63 else { throw fail("conv kernel \(k) (must be odd, 1...63)") }
            case .lstmEncoder(let h), .lstmDecoder(let h):
                guard h > 0 && h <= 1 << 20 else { throw fail("LSTM of \(h) hidden units (must be 1...\(1 << 20))") }
            case .maxPool, .upsample:
                break
            }
        }
        let input = spec.imageShape
        let encShapes = try ModelSpec.shapes(spec.encoder, input: input)
        var codeShape = encShapes.last!
        if spec.variational {
            guard codeShape.count == 1, codeShape[0] % 2 == 0 else {
                throw fail("a VAE encoder must end in a dense layer of 2·latent units")
            }
            codeShape = [codeShape[0] / 2]
        }
        let decShapes = try ModelSpec.shapes(spec.decoder, input: codeShape)
        for s in encShapes + decShapes + [codeShape] {
            var n = 1
            for d in s {
                let (p, o) = n.multipliedReportingOverflow(by: d)
                guard !o, d > 0, p <= maxLayerFloats else { throw fail("a layer's output \(s) is larger than \(maxLayerFloats) values") }
                n = p
            }
        }
        let encoder = try build(spec.encoder, input: input)
        let latent = codeShape.reduce(1, *)
        let decoder = try build(spec.decoder, input: codeShape)
        let inputDim = input.reduce(1, *)
        guard decoder.last!.outputSize == inputDim else {
            throw fail("decoder ends with \(decoder.last!.outputSize) values, expected \(inputDim)")
        }
        if spec.penalty == .contractive {
            guard let d = encoder.last as? Dense, d.activation == .sigmoid else {
                throw fail("the contractive penalty needs a dense sigmoid code layer")
            }
        }
        // Flat layout, PyTorch state_dict order and names.
        var ts: [ParameterTensor] = []
        var offset = 0
        for (prefix, layers) in [("encoder", encoder), ("decoder", decoder)] {
            var module = 0
            for l in layers {
                for (suffix, shape) in l.parameterShapes {
                    ts.append(ParameterTensor(name: "\(prefix).\(module).\(suffix)", shape: shape, offset: offset))
                    var n = 1
                    for d in shape {
                        let (p, o) = n.multipliedReportingOverflow(by: d)
                        guard !o, p <= maxParameters else { throw fail("more than \(maxParameters) parameters") }
                        n = p
                    }
                    offset += n
                    guard offset <= maxParameters else { throw fail("more than \(maxParameters) parameters") }
                }
                module += l.torchModuleCount
            }
        }
        return Layout(encoder: encoder, decoder: decoder, inputDim: inputDim, latent: latent, tensors: ts, parameterCount: offset)
    }

    static func build(_ specs: [LayerSpec], input: [Int]) throws -> [Layer] {
        var shape = input
        var layers: [Layer] = []
        let shapes = try ModelSpec.shapes(specs, input: input)
        for (i, s) in specs.enumerated() {
            let inSize = shape.reduce(1, *)
            switch s {
            case .dense(let units, let act):
                layers.append(Dense(inSize, units, activation: act))
            case .conv(let ch, let k, let act):
                layers.append(Conv2D(inChannels: shape[0], outChannels: ch, kernel: k, height: shape[1], width: shape[2], activation: act))
            case .maxPool:
                layers.append(MaxPool2D(channels: shape[0], height: shape[1], width: shape[2]))
            case .upsample:
                layers.append(Upsample2D(channels: shape[0], height: shape[1], width: shape[2]))
            case .lstmEncoder(let h):
                guard inSize == 784 else { throw AETError.usage("lstm encoder needs the 28×28 image as input") }
                layers.append(LSTMEncoder(steps: 28, features: 28, hidden: h))
            case .lstmDecoder(let h):
                layers.append(LSTMDecoder(code: inSize, steps: 28, features: 28, hidden: h))
            }
            shape = shapes[i]
        }
        return layers
    }

    /// Initialises every layer from `seed` (same on every rank; rank 0's copy is broadcast anyway).
    public func initialize(_ scheme: InitScheme, seed: UInt64) {
        var rng = Streams.rng(seed: seed, stream: Streams.initialise)
        for l in encoder + decoder { l.initialize(scheme, rng: &rng) }
    }

    /// The code buffer (encoder output, [n, latent]; for the VAE [n, 2·latent] = [μ | log σ²]).
    public var code: UnsafeMutablePointer<Float> { encActs.last!.pointer }
    public var logits: UnsafeMutablePointer<Float> { decActs.last!.pointer }
    public var needsBatchStatistics: Bool { spec.penalty == .kl }

    /// Macs per sample of one forward pass.
    public var macsPerSample: Int { (encoder + decoder).reduce(0) { $0 + $1.macsPerSample } }
    /// Floating-point operations per sample of a training step counted from the matrix products:
    /// forward, weight gradient and input gradient (2 flops per multiply-add), less the first
    /// layer's input gradient, which is never computed.
    public var trainFlopsPerSample: Int { 2 * (3 * macsPerSample - encoder[0].macsPerSample) }

    // MARK: forward

    /// Runs the encoder on `input[0..<n]`. For the VAE, `noise` keys ε per sample as
    /// (seed, step, global index of the first sample); nil uses z = μ (evaluation).
    public func encode(_ n: Int) {
        var a = UnsafePointer(networkInput)
        for (i, l) in encoder.enumerated() {
            l.forward(a, encActs[i].pointer, batch: n)
            a = UnsafePointer(encActs[i].pointer)
        }
    }

    /// Decoder input for the VAE (z) or the plain code.
    var decoderInput: UnsafeMutablePointer<Float> { spec.variational ? z.pointer : code }

    /// Full forward: encode, sample (VAE), decode to logits. The sigmoid is applied by the loss head.
    public func forward(_ n: Int, noise: (seed: UInt64, step: Int, firstIndex: Int)?) {
        encode(n)
        if spec.variational { sample(n, noise: noise) }
        decode(from: decoderInput, n)
    }

    public func decode(from zin: UnsafePointer<Float>, _ n: Int) {
        var a = zin
        for (i, l) in decoder.enumerated() {
            l.forward(a, decActs[i].pointer, batch: n)
            a = UnsafePointer(decActs[i].pointer)
        }
    }

    func sample(_ n: Int, noise: (seed: UInt64, step: Int, firstIndex: Int)?) {
        let L = latent
        let c = code, zp = z.pointer, e = eps.pointer
        for s in 0..<n {
            let mu = c + s * 2 * L, lv = mu + L
            if let noise {
                var g = Streams.rng(seed: noise.seed, stream: Streams.vae, UInt64(noise.step), UInt64(noise.firstIndex + s))
                for j in 0..<L {
                    e[s * L + j] = g.normal()
                    zp[s * L + j] = mu[j] + expf(0.5 * lv[j]) * e[s * L + j]
                }
            } else {
                for j in 0..<L { e[s * L + j] = 0; zp[s * L + j] = mu[j] }
            }
        }
    }

    /// Column sums of the code over the local batch into `codeStats` (sparse-kl's ρ̂ numerator).
    public func accumulateCodeStatistics(_ n: Int) {
        let L = latent, h = code, st = codeStats.pointer
        st.update(repeating: 0, count: L)
        for s in 0..<n { for j in 0..<L { st[j] += h[s * L + j] } }
    }

    // MARK: backward

    /// Loss head, decoder backward, code penalties / VAE terms, encoder backward.
    /// Gradients are *added* into `grads` already divided by `globalCount` (the global batch),
    /// so after the sum all-reduce they are the gradient of the global-batch mean.
    /// `codeStats` must hold the global column sums for sparse-kl; `batchTerms` adds the
    /// batch-level penalty (counted once, on one rank).
    /// `gradientsFinal(offset)` is called as soon as every gradient from `offset` to the end of the
    /// buffer is final (layers finish in reverse order), so buckets can be reduced during backward.
    public func backward(_ n: Int, globalCount: Int, batchTerms: Bool, gradientsFinal: (Int) -> Void = { _ in }) -> StepSums {
        var sums = StepSums()
        let scale = 1 / Float(globalCount)
        let dlogits = gradA.pointer
        if n > 0 {
            sums.recon = LossHead.forwardBackward(objective.loss, logits: logits, output: output.pointer,
                                                  target: target.pointer, dz: dlogits, count: n, dim: inputDim,
                                                  scale: scale, perImageSum: spec.variational)
        }
        // Decoder, last layer first; ping-pong between gradA and gradB.
        var dy = gradA.pointer, spare = gradB.pointer
        for i in stride(from: decoder.count - 1, through: 0, by: -1) {
            let x = i > 0 ? UnsafePointer(decActs[i - 1].pointer) : UnsafePointer(decoderInput)
            decoder[i].backward(x: x, y: decActs[i].pointer, dy: dy, dx: spare, batch: n)
            swap(&dy, &spare)
            // The contractive penalty still adds to the last encoder layer's dW: not final yet.
            gradientsFinal(decoderOffsets[i])
        }
        // dy now holds dL/d(decoder input).
        if spec.variational {
            sums.penalty = vaeBackward(n, dz: dy, dcode: spare, scale: scale)
            swap(&dy, &spare)
        } else {
            sums.penalty = penaltyBackward(n, dcode: dy, scale: scale, globalCount: globalCount, batchTerms: batchTerms)
        }
        for i in stride(from: encoder.count - 1, through: 0, by: -1) {
            let x = i > 0 ? UnsafePointer(encActs[i - 1].pointer) : UnsafePointer(networkInput)
            encoder[i].backward(x: x, y: encActs[i].pointer, dy: dy, dx: i > 0 ? spare : nil, batch: n)
            swap(&dy, &spare)
            gradientsFinal(encoderOffsets[i])
        }
        let beta = spec.variational ? Double(objective.beta) : 1
        sums.loss = sums.recon + beta * sums.penalty
        return sums
    }

    /// VAE: from dL/dz to dL/d[μ | log σ²], adding β·KL(q‖N(0, I)). Returns Σ KL over samples.
    func vaeBackward(_ n: Int, dz: UnsafePointer<Float>, dcode: UnsafeMutablePointer<Float>, scale: Float) -> Double {
        let L = latent, c = code, e = eps.pointer, beta = objective.beta
        var kl = 0.0
        for s in 0..<n {
            let mu = c + s * 2 * L, lv = mu + L
            let dmu = dcode + s * 2 * L, dlv = dmu + L
            var k: Float = 0
            for j in 0..<L {
                let ev = expf(lv[j])
                let sd = expf(0.5 * lv[j])
                let g = dz[s * L + j]
                k += -0.5 * (1 + lv[j] - mu[j] * mu[j] - ev)
                dmu[j] = g + beta * mu[j] * scale
                dlv[j] = g * e[s * L + j] * 0.5 * sd + beta * 0.5 * (ev - 1) * scale
            }
            kl += Double(k)
        }
        return kl
    }

    /// Code penalties (sparse L1, sparse KL, contractive): add their gradient into dcode
    /// (dL/dh, h the code after its activation) and return their value summed over samples.
    func penaltyBackward(_ n: Int, dcode: UnsafeMutablePointer<Float>, scale: Float, globalCount: Int,
                         batchTerms: Bool) -> Double {
        let L = latent, h = code
        switch spec.penalty {
        case .none:
            return 0
        case .l1:
            // λ·mean_j |h_j| per sample.
            let lam = objective.sparsityWeight
            let g = lam / Float(L) * scale
            var total = 0.0
            for s in 0..<n {
                var a: Float = 0
                for j in 0..<L {
                    let v = h[s * L + j]
                    a += abs(v)
                    dcode[s * L + j] += v > 0 ? g : (v < 0 ? -g : 0)
                }
                total += Double(a * lam / Float(L))
            }
            return total
        case .kl:
            // w·Σ_j KL(ρ‖ρ̂_j), ρ̂_j = global batch mean of h_j (codeStats holds global sums).
            let rho = objective.sparsityTarget, w = objective.sparsityWeight
            let st = codeStats.pointer
            var penalty = 0.0
            for j in 0..<L {
                let rh = min(max(st[j] / Float(globalCount), 1e-6), 1 - 1e-6)
                penalty += Double(rho * logf(rho / rh) + (1 - rho) * logf((1 - rho) / (1 - rh)))
                let g = w * (-rho / rh + (1 - rho) / (1 - rh)) * scale
                for s in 0..<n { dcode[s * L + j] += g }
            }
            // A batch-level term: counted once per global batch (as if per sample, × count).
            return batchTerms ? Double(w) * penalty * Double(globalCount) : 0
        case .contractive:
            // Exact for a dense sigmoid code layer h = σ(W x + b):
            // ‖J‖²_F = Σ_j (h_j(1−h_j))² ‖W_j‖².
            let layer = encoder.last as! Dense
            let lam = objective.contractiveWeight
            let k = layer.inputSize
            let w = layer.w!, dw = layer.dw!
            let rowNorm = self.rowNorm.pointer, colAcc = self.colAcc.pointer
            colAcc.update(repeating: 0, count: L)
            for j in 0..<L {
                var s: Float = 0
                for i in 0..<k { s += w[j * k + i] * w[j * k + i] }
                rowNorm[j] = s
            }
            var total = 0.0
            for s in 0..<n {
                var p: Float = 0
                for j in 0..<L {
                    let v = h[s * L + j]
                    let d = v * (1 - v)
                    p += d * d * rowNorm[j]
                    colAcc[j] += d * d
                    // ∂/∂h of (h(1−h))² = 2 h(1−h)(1−2h)
                    dcode[s * L + j] += lam * scale * rowNorm[j] * 2 * d * (1 - 2 * v)
                }
                total += Double(lam * p)
            }
            if n > 0 {
                for j in 0..<L {
                    let c = lam * scale * colAcc[j] * 2
                    for i in 0..<k { dw[j * k + i] += c * w[j * k + i] }
                }
            }
            return total
        }
    }

    // MARK: evaluation

    /// Reconstruction sums on `input`/`target` (z = μ for the VAE): squared error, BCE, and
    /// the penalty term (VAE KL) summed over samples.
    public func evaluate(_ n: Int) -> (sse: Double, bce: Double, penalty: Double) {
        guard n > 0 else { return (0, 0, 0) }
        corrupted = false
        forward(n, noise: nil)
        let (sse, bce) = LossHead.evalSums(logits: logits, output: output.pointer, target: target.pointer, count: n * inputDim)
        var pen = 0.0
        if spec.variational {
            let L = latent, c = code
            for s in 0..<n {
                for j in 0..<L {
                    let mu = c[s * 2 * L + j], lv = c[s * 2 * L + L + j]
                    pen += Double(-0.5 * (1 + lv - mu * mu - expf(lv)))
                }
            }
        }
        return (sse, bce, pen)
    }

    public func zeroGrads() { grads.zero() }

    /// Readies the gradient buffer for a backward pass over `n` samples: zeroes what backward
    /// adds into (and the extra slots). With n == 0 backward writes nothing, so all is zeroed.
    public func prepareGrads(_ n: Int) {
        if n == 0 { return zeroGrads() }
        let g = grads.pointer
        for r in zeroedRanges { (g + r.lowerBound).update(repeating: 0, count: r.count) }
        (g + parameterCount).update(repeating: 0, count: Autoencoder.extraSlots)
    }

    /// Moves the gradients into memory owned elsewhere (node-shared); contents are not copied.
    /// `grads` holds `parameterCount + extraSlots` floats.
    public func rebind(grads: FloatBuffer) {
        precondition(grads.count >= parameterCount + Autoencoder.extraSlots)
        self.grads = grads
        for (l, off) in zip(encoder + decoder, encoderOffsets + decoderOffsets) {
            l.bind(parameters: params.pointer + off, gradients: grads.pointer + off)
        }
    }
}
