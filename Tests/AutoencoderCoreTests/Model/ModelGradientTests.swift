import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Whole-model finite-difference checks through `Autoencoder`: forward → backward must give the
/// gradient of the objective it reports. The objective is recomputed here in Double from the
/// model's logits and code (an independent definition), so the test also checks the value.
///
/// With one "rank" and `globalCount = n`, `backward` adds (1/n)·dL/dθ into `grads`, where
/// L = Σ_s per-sample objective (+ the KL batch term, counted as w·ΣKL·n when batchTerms is true).
final class ModelGradientTests: XCTestCase {
    static func sigmoid(_ z: Double) -> Double { 1 / (1 + exp(-z)) }

    struct Case {
        let model: Autoencoder
        let n: Int
        let noise: (seed: UInt64, step: Int, firstIndex: Int)?
    }

    func makeCase(hidden: [Int], latent: Int, act: Activation = .tanh, code: Activation, loss: LossKind,
                  penalty: PenaltyKind = .none, variational: Bool = false, objective: (inout Objective) -> Void = { _ in },
                  n: Int = 3, seed: UInt64 = 1, binaryTargets: Bool = false) throws -> Case {
        let spec = ModelSpec.mirroredMLP(name: "t", summary: "t", hidden: hidden, latent: latent, act: act,
                                         codeActivation: code, initScheme: .torch, loss: loss,
                                         penalty: penalty, variational: variational)
        return try makeCase(spec: spec, loss: loss, objective: objective, n: n, seed: seed, binaryTargets: binaryTargets)
    }

    func makeCase(spec: ModelSpec, loss: LossKind, objective: (inout Objective) -> Void = { _ in }, n: Int = 3, seed: UInt64 = 1,
                  scheme: InitScheme = .torch, binaryTargets: Bool = false) throws -> Case {
        var obj = Objective()
        obj.loss = loss
        objective(&obj)
        let m = try Autoencoder(spec: spec, objective: obj, maxBatch: n)
        m.initialize(scheme, seed: seed)
        var g = SplitMix64(seed: seed &+ 99)
        for i in 0..<(n * m.inputDim) {
            let u = g.nextFloat()
            m.target[i] = binaryTargets ? (u < 0.3 ? 1 : 0) : u
        }
        m.corrupted = false
        return Case(model: m, n: n, noise: spec.variational ? (seed: 42, step: 7, firstIndex: 5) : nil)
    }

    /// The objective Σ_s [recon_s + penalty_s] (plus the batch-level sparse-KL term), in Double.
    static func objective(_ c: Case) -> (total: Double, recon: Double, penalty: Double) {
        let m = c.model, n = c.n, d = m.inputDim, L = m.latent
        m.forward(n, noise: c.noise)
        let z = m.logits, x = m.target.pointer
        var recon = 0.0
        for s in 0..<n {
            var r = 0.0
            for i in (s * d)..<((s + 1) * d) {
                let y = sigmoid(Double(z[i])), t = Double(x[i])
                switch m.objective.loss {
                case .mse: r += (y - t) * (y - t)
                case .l1: r += abs(y - t)
                case .bce: r += -(t * -log1p(exp(-Double(z[i]))) + (1 - t) * -log1p(exp(Double(z[i]))))
                }
            }
            recon += m.spec.variational ? r : r / Double(d)
        }
        let h = m.code
        var penalty = 0.0
        let o = m.objective
        if m.spec.variational {
            for s in 0..<n {
                for j in 0..<L {
                    let mu = Double(h[s * 2 * L + j]), lv = Double(h[s * 2 * L + L + j])
                    penalty += -0.5 * (1 + lv - mu * mu - exp(lv))
                }
            }
            return (recon + Double(o.beta) * penalty, recon, penalty)
        }
        switch m.spec.penalty {
        case .none: break
        case .l1:
            for s in 0..<n {
                var a = 0.0
                for j in 0..<L { a += abs(Double(h[s * L + j])) }
                penalty += Double(o.sparsityWeight) * a / Double(L)
            }
        case .kl:
            let rho = Double(o.sparsityTarget)
            var kl = 0.0
            for j in 0..<L {
                var mean = 0.0
                for s in 0..<n { mean += Double(h[s * L + j]) }
                mean /= Double(n)
                kl += rho * log(rho / mean) + (1 - rho) * log((1 - rho) / (1 - mean))
            }
            penalty = Double(o.sparsityWeight) * kl * Double(n)
        case .contractive:
            // ‖∂h/∂x‖²_F for h = σ(Wx + b): Σ_j (h_j(1 − h_j))² ‖W_j‖².
            let layer = m.encoder.last as! Dense
            let k = layer.inputSize
            for s in 0..<n {
                var f = 0.0
                for j in 0..<L {
                    var row = 0.0
                    for i in 0..<k { row += Double(layer.w[j * k + i]) * Double(layer.w[j * k + i]) }
                    let v = Double(h[s * L + j]), dv = v * (1 - v)
                    f += dv * dv * row
                }
                penalty += Double(o.contractiveWeight) * f
            }
        }
        return (recon + penalty, recon, penalty)
    }

    /// Runs the training-step path once at the current parameters: zero grads, forward, code
    /// statistics (sparse-kl), backward(globalCount: n, batchTerms: true).
    static func analytic(_ c: Case) -> StepSums {
        let m = c.model
        // Stale garbage first: backward must overwrite every gradient that prepareGrads leaves.
        m.grads.pointer.update(repeating: .nan, count: m.grads.count)
        m.prepareGrads(c.n)
        m.forward(c.n, noise: c.noise)
        if m.needsBatchStatistics { m.accumulateCodeStatistics(c.n) }
        return m.backward(c.n, globalCount: c.n, batchTerms: true)
    }

    /// Up to `per` random coordinates of every parameter tensor.
    static func coordinates(_ m: Autoencoder, per: Int, seed: UInt64) -> [(String, Int)] {
        var g = SplitMix64(seed: seed)
        var out: [(String, Int)] = []
        for t in m.tensors {
            if t.count <= per {
                for i in 0..<t.count { out.append((t.name, t.offset + i)) }
            } else {
                for _ in 0..<per { out.append((t.name, t.offset + Int(g.next() % UInt64(t.count)))) }
            }
        }
        return out
    }

    /// The sign pattern of every ReLU-type output and the argmax of every 2×2 max-pool window,
    /// after the last forward pass: a finite-difference step that changes it crossed a kink.
    static func kinkPattern(_ m: Autoencoder, _ n: Int) -> [Bool] {
        var out: [Bool] = []
        let layers = m.encoder + m.decoder, acts = m.encActs + m.decActs
        for (i, l) in layers.enumerated() {
            let act: Activation? = (l as? Dense)?.activation ?? (l as? Conv2D)?.activation
            if act == .relu || act == .leakyRelu {
                out += (0..<(n * l.outputSize)).map { acts[i][$0] > 0 }
            }
            if let p = l as? MaxPool2D {
                let x: UnsafePointer<Float> = i == 0 ? UnsafePointer(m.networkInput)
                    : i == m.encoder.count ? UnsafePointer(m.decoderInput) : UnsafePointer(acts[i - 1].pointer)
                let (h, w) = (p.height, p.width)
                for s in 0..<n {
                    for c in 0..<p.channels {
                        let base = (s * p.channels + c) * h * w
                        for y in stride(from: 0, to: h, by: 2) {
                            for xx in stride(from: 0, to: w, by: 2) {
                                let v = [x[base + y * w + xx], x[base + y * w + xx + 1], x[base + (y + 1) * w + xx], x[base + (y + 1) * w + xx + 1]]
                                let k = v.indices.max { v[$0] < v[$1] }!
                                out += (0..<4).map { $0 == k }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Checks (1/n)·dL/dθ from `backward` against central differences of L/n over up to `per`
    /// coordinates of every tensor, and the reported sums against the Double objective.
    ///
    /// Tolerance per coordinate: rtol · max(|analytic|, |numeric|) plus `atolFraction` of the
    /// largest |gradient| of that tensor (coordinates whose gradient is tiny next to the rest of
    /// their tensor are limited by the Float32 rounding of the logits, not by the derivative).
    /// `reference` replaces the objective (it must run its own forward); `kinks` leaves out the
    /// coordinates whose step changes a ReLU sign or a max-pool argmax (at most a quarter).
    func checkModel(_ what: String, _ c: Case, h: Float = 1e-2, rtol: Double = 1e-3, atolFraction: Double = 1e-3,
                    per: Int = 40, kinks: Bool = false,
                    reference: ((Case) -> (total: Double, recon: Double, penalty: Double))? = nil,
                    file: StaticString = #filePath, line: UInt = #line) {
        let m = c.model, n = Double(c.n)
        let objective = reference ?? ModelGradientTests.objective
        let sums = ModelGradientTests.analytic(c)
        let grads = m.grads.array
        XCTAssertEqual(grads.count, m.parameterCount + Autoencoder.extraSlots, file: file, line: line)
        let ref = objective(c)
        Compare.close("\(what): StepSums.loss", sums.loss, ref.total, rtol: 1e-5, file: file, line: line)
        Compare.close("\(what): StepSums.recon", sums.recon, ref.recon, rtol: 1e-5, file: file, line: line)
        Compare.close("\(what): StepSums.penalty", sums.penalty, ref.penalty, rtol: 1e-5, atol: 1e-9, file: file, line: line)
        if m.spec.penalty != .none {
            XCTAssertGreaterThan(ref.penalty, 0.05 * ref.recon, "\(what): the penalty is too small to be checked", file: file, line: line)
        }

        let p = m.params.pointer
        var coords: [(String, Int)] = [], numeric: [Double] = []
        var straddling = 0
        let base = kinks ? { () -> [Bool] in _ = objective(c); return ModelGradientTests.kinkPattern(m, c.n) }() : []
        for (name, i) in ModelGradientTests.coordinates(m, per: per, seed: 17) {
            var crossed = false
            let d = GradCheck.centralDifference(p, i, h: h) {
                let v = objective(c).total
                if kinks && ModelGradientTests.kinkPattern(m, c.n) != base { crossed = true }
                return v
            } / n
            if crossed { straddling += 1; continue }
            coords.append((name, i))
            numeric.append(d)
        }
        XCTAssertLessThanOrEqual(straddling, (coords.count + straddling) / 4, "\(what): \(straddling) coordinates straddle a kink",
                                 file: file, line: line)
        // Absolute slack relative to the largest gradient of each tensor.
        var scale: [String: Double] = [:]
        for t in m.tensors { scale[t.name] = (t.offset..<(t.offset + t.count)).reduce(0.0) { max($0, abs(Double(grads[$1]))) } }
        Compare.elementwise("\(what): analytic vs central difference (h \(h)\(straddling > 0 ? ", \(straddling) at a kink left out" : ""))",
                            coords.map { Double(grads[$0.1]) }, numeric,
                            tolerance: { k, a, num in atolFraction * (scale[coords[k].0] ?? 0) + 1e-12 + rtol * max(abs(a), abs(num)) },
                            label: { "\(coords[$0].0)[\(coords[$0].1)]" }, file: file, line: line)
        // Every tensor must actually receive gradient (a dropped term would leave zeros), and no
        // entry may be left at the NaN that `analytic` pre-fills.
        Compare.allFinite("\(what): gradient", grads, file: file, line: line)
        for t in m.tensors {
            XCTAssertGreaterThan(scale[t.name] ?? 0, 0, "\(what): \(t.name) has an all-zero gradient", file: file, line: line)
        }
        // The extra slots after the gradients are left alone by backward.
        Compare.identical("\(what): extra slots", Array(grads[m.parameterCount...]),
                          [Float](repeating: 0, count: Autoencoder.extraSlots), file: file, line: line)
    }

    /// A penalty on its own. Its gradient is linear in its weight w while the reconstruction's is
    /// not affected by w, so (g(w₂) − g(w₁)) / (w₂ − w₁) from two models that differ only in w is
    /// (1/n)·d(penalty / w)/dθ; it is compared with central differences of the penalty term alone.
    /// The decoder's gradient must not depend on w at all.
    func checkPenaltyIsolated(_ what: String, w1: Float, w2: Float, h: Float = 5e-3, rtol: Double = 1e-3,
                              make: (Float) throws -> Case, file: StaticString = #filePath, line: UInt = #line) throws {
        let c1 = try make(w1), c2 = try make(w2)
        let s1 = ModelGradientTests.analytic(c1), g1 = c1.model.grads.array
        let s2 = ModelGradientTests.analytic(c2), g2 = c2.model.grads.array
        let m = c1.model, n = Double(c1.n)
        Compare.allFinite("\(what): gradient at w₁", g1, file: file, line: line)
        Compare.allFinite("\(what): gradient at w₂", g2, file: file, line: line)
        Compare.close("\(what): recon does not depend on the weight", s2.recon, s1.recon, rtol: 1e-12, file: file, line: line)
        // The unweighted penalty, (total − recon) / w, is the same for both weights.
        let r1 = ModelGradientTests.objective(c1), r2 = ModelGradientTests.objective(c2)
        let u1 = (r1.total - r1.recon) / Double(w1), u2 = (r2.total - r2.recon) / Double(w2)
        XCTAssertGreaterThan(u1, 0, "\(what): no penalty", file: file, line: line)
        Compare.close("\(what): unweighted penalty", u2, u1, rtol: 1e-5, file: file, line: line)
        Compare.close("\(what): StepSums.loss − recon", s1.loss - s1.recon, r1.total - r1.recon, rtol: 1e-4, file: file, line: line)
        let decoder = m.tensors.filter { $0.name.hasPrefix("decoder") }.flatMap { Array($0.offset..<($0.offset + $0.count)) }
        Compare.close("\(what): decoder gradient is independent of the penalty weight", decoder.map { g2[$0] }, decoder.map { g1[$0] },
                      rtol: 1e-6, atol: 1e-12, file: file, line: line)
        let p = m.params.pointer
        let coords = ModelGradientTests.coordinates(m, per: 40, seed: 3).filter { $0.0.hasPrefix("encoder") }
        XCTAssertGreaterThanOrEqual(coords.count, 40, file: file, line: line)
        let analytic = coords.map { (Double(g2[$0.1]) - Double(g1[$0.1])) / Double(w2 - w1) }
        let numeric = coords.map { (_, i) in
            GradCheck.centralDifference(p, i, h: h) {
                let r = ModelGradientTests.objective(c1)
                return (r.total - r.recon) / Double(w1)
            } / n
        }
        var scale = 0.0
        for a in analytic { scale = max(scale, abs(a)) }
        XCTAssertGreaterThan(scale, 0, "\(what): the penalty has no gradient", file: file, line: line)
        // The difference of two Float gradients loses ~1e-7·|g| / Δw of absolute precision.
        Compare.elementwise("\(what): penalty gradient vs central difference of the penalty alone", analytic, numeric,
                            tolerance: { k, a, num in
                                let i = coords[k].1
                                return 3e-6 * max(abs(Double(g1[i])), abs(Double(g2[i]))) / Double(w2 - w1)
                                    + 1e-3 * scale + rtol * max(abs(a), abs(num))
                            }, label: { "\(coords[$0].0)[\(coords[$0].1)]" }, file: file, line: line)
    }

    // MARK: plain reconstruction losses

    func testPlainMSE() throws {
        checkModel("mse", try makeCase(hidden: [16], latent: 6, code: .identity, loss: .mse))
    }

    func testPlainBCE() throws {
        // Sigmoid hidden layers give tiny first-layer gradients whose central differences are
        // limited by the rounding of the Float logits: the larger step halves that error.
        checkModel("bce", try makeCase(hidden: [16], latent: 6, act: .sigmoid, code: .tanh, loss: .bce, seed: 2), h: 2e-2)
    }

    func testPlainL1() throws {
        // Binary targets: y = σ(z) ∈ (0, 1) never meets them, so |y − x| has no kink.
        checkModel("l1", try makeCase(hidden: [16], latent: 6, code: .identity, loss: .l1, seed: 3, binaryTargets: true))
    }

    func testReLUMLPWithLeakyCode() throws {
        // The presets' activations (ReLU hidden layers); coordinates whose step crosses a kink are left out.
        checkModel("relu mlp", try makeCase(hidden: [24, 12], latent: 6, act: .relu, code: .leakyRelu, loss: .bce, seed: 4),
                   h: 5e-3, kinks: true)
    }

    // MARK: whole presets: conv, lstm

    /// The conv preset's architecture (Conv 3×3 → MaxPool → Conv → MaxPool; Conv → Upsample →
    /// Conv → Upsample → Conv to 1 channel; BCE) end to end through the model, with 4 channels
    /// instead of 32 (the same lowerings: out > in, out = in, out < in; a 32-channel check takes
    /// 20 s in a debug build) and tanh instead of ReLU: with 10⁴ ReLU units any step crosses a
    /// kink somewhere, while ReLU itself is checked per layer. Max-pool stays: its windows hold
    /// near-ties (a gap of 7e-6 between the two largest values at this seed), so coordinates whose
    /// step changes an argmax are left out.
    func testConvPresetGradient() throws {
        var spec = try XCTUnwrap(ModelSpec.preset("conv"))
        func narrow(_ l: LayerSpec) -> LayerSpec {
            if case .conv(let ch, let k, let a) = l { return .conv(channels: ch == 1 ? 1 : 4, kernel: k, activation: a == .relu ? .tanh : a) }
            return l
        }
        spec.encoder = spec.encoder.map(narrow)
        spec.decoder = spec.decoder.map(narrow)
        let c = try makeCase(spec: spec, loss: .bce, n: 2, seed: 31, scheme: .glorot)
        XCTAssertEqual(c.model.tensors.map(\.shape), [[4, 1, 3, 3], [4], [4, 4, 3, 3], [4], [4, 4, 3, 3], [4], [4, 4, 3, 3], [4], [1, 4, 3, 3], [1]])
        checkModel("conv preset (4 channels, tanh)", c, h: 3e-4, per: 20, kinks: true)
    }

    /// The lstm preset (LSTM(28→64) encoder, repeated code into LSTM(64→64) + Linear(64→28) per
    /// row, BCE): smooth, so the default step.
    func testLSTMPresetGradient() throws {
        let spec = try XCTUnwrap(ModelSpec.preset("lstm"))
        let c = try makeCase(spec: spec, loss: .bce, n: 2, seed: 32, scheme: .glorot)
        checkModel("lstm preset", c, per: 20)
    }

    // MARK: denoising

    /// A mirrored MLP evaluated in Double straight from the state-dict tensors (nn.Linear:
    /// y = x Wᵀ + b, then the layer's activation); returns the logits of `n` samples of `x`.
    static func mlpLogits(_ m: Autoencoder, _ x: [Float], _ n: Int) -> [Double] {
        let acts = (m.spec.encoder + m.spec.decoder).map { l -> Activation in
            guard case .dense(_, let a) = l else { fatalError("mlpLogits: dense layers only") }
            return a
        }
        precondition(m.tensors.count == 2 * acts.count)
        var h = x.map(Double.init), width = m.inputDim
        for (k, act) in acts.enumerated() {
            let w = m.tensors[2 * k], b = m.tensors[2 * k + 1]
            let out = w.shape[0]
            precondition(w.shape[1] == width)
            var next = [Double](repeating: 0, count: n * out)
            for s in 0..<n {
                for j in 0..<out {
                    var z = Double(m.params[b.offset + j])
                    for i in 0..<width { z += Double(m.params[w.offset + j * width + i]) * h[s * width + i] }
                    next[s * out + j] = DenseTests.reference(act, z)
                }
            }
            h = next
            width = out
        }
        return h
    }

    /// Denoising: the network reads the corrupted input and the loss compares with the clean
    /// target. The reference forward here is computed independently (Double, from the tensors) on
    /// the *corrupted* input, its BCE taken against the *clean* image; the model's logits must equal
    /// it (and not the clean input's), and its gradient must be that objective's gradient.
    func testDenoisingGradientIsOfTheCorruptedInputAgainstTheCleanTarget() throws {
        let c = try makeCase(hidden: [12], latent: 5, act: .tanh, code: .sigmoid, loss: .bce, n: 3, seed: 33)
        let m = c.model, n = c.n, d = m.inputDim
        NoiseSpec(kind: .gaussian, amount: 0.5).apply(clean: m.target.pointer, noisy: m.input.pointer, count: n, dim: d,
                                                      seed: 3, key: 1, firstIndex: 0)
        m.corrupted = true
        let noisy = Array(m.input.array[0..<(n * d)]), clean = Array(m.target.array[0..<(n * d)])
        let changed = (0..<(n * d)).filter { noisy[$0] != clean[$0] }.count
        XCTAssertGreaterThan(changed, n * d / 2, "the corruption changed only \(changed) of \(n * d) pixels")
        m.forward(n, noise: nil)
        let noisyLogits = Self.mlpLogits(m, noisy, n), cleanLogits = Self.mlpLogits(m, clean, n)
        Compare.close("denoising: logits are the corrupted input's", Array(UnsafeBufferPointer(start: m.logits, count: n * d)),
                      noisyLogits, rtol: 1e-5, atol: 1e-5)
        let apart = zip(noisyLogits, cleanLogits).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(apart, 1e-2, "the corrupted and clean inputs give the same logits: the test could not tell them apart")
        func reference(_ c: Case) -> (total: Double, recon: Double, penalty: Double) {
            let z = Self.mlpLogits(c.model, noisy, n)
            var recon = 0.0
            for s in 0..<n {
                var r = 0.0
                for i in (s * d)..<((s + 1) * d) {
                    let t = Double(clean[i])
                    r += -(t * -log1p(exp(-z[i])) + (1 - t) * -log1p(exp(z[i])))
                }
                recon += r / Double(d)
            }
            return (recon, recon, 0)
        }
        checkModel("denoising", c, per: 30, reference: reference)
        XCTAssertTrue(m.corrupted, "backward must not clear the corruption")
    }

    // MARK: penalties

    /// The first seed whose codes all keep |h| ≥ 0.02 (the FD step moves a code by at most ~2e-3
    /// here, so it stays off the |h| kink), with both signs present.
    func sparseL1Case(weight: Float) throws -> Case {
        for seed in UInt64(4)..<UInt64(64) {
            let c = try makeCase(hidden: [12], latent: 8, code: .tanh, loss: .bce, penalty: .l1,
                                 objective: { $0.sparsityWeight = weight }, seed: seed)
            c.model.forward(c.n, noise: nil)
            let codes = (0..<(c.n * c.model.latent)).map { c.model.code[$0] }
            if codes.allSatisfy({ abs($0) >= 0.02 }) && codes.contains(where: { $0 < 0 }) && codes.contains(where: { $0 > 0 }) {
                return c
            }
        }
        throw TestFailure("no seed keeps the codes off the kink")
    }

    func testSparseL1Penalty() throws {
        // tanh code: both signs of h, so sign(h) is exercised. Large λ makes the term matter.
        checkModel("sparse-l1", try sparseL1Case(weight: 0.5), h: 2e-3)
    }

    func testSparseL1PenaltyIsolated() throws {
        try checkPenaltyIsolated("sparse-l1", w1: 0.1, w2: 0.7, h: 2e-3) { try sparseL1Case(weight: $0) }
    }

    func sparseKLCase(weight: Float) throws -> Case {
        try makeCase(hidden: [12], latent: 8, code: .sigmoid, loss: .bce, penalty: .kl,
                     objective: { $0.sparsityWeight = weight; $0.sparsityTarget = 0.2 }, n: 4, seed: 5)
    }

    func testSparseKLPenalty() throws {
        let c = try sparseKLCase(weight: 0.1)
        checkModel("sparse-kl", c)
        // Without batchTerms the KL value is not counted, but its gradient still is (each rank
        // adds its share of the gradient; only one rank reports the value).
        let m = c.model
        _ = ModelGradientTests.analytic(c)
        let withTerms = m.grads.array
        m.zeroGrads()
        m.forward(c.n, noise: nil)
        m.accumulateCodeStatistics(c.n)
        let s = m.backward(c.n, globalCount: c.n, batchTerms: false)
        XCTAssertEqual(s.penalty, 0)
        XCTAssertEqual(s.loss, s.recon)
        Compare.identical("batchTerms must not change the gradient", m.grads.array, withTerms)
    }

    func testSparseKLPenaltyIsolated() throws {
        try checkPenaltyIsolated("sparse-kl", w1: 0.05, w2: 0.4) { try sparseKLCase(weight: $0) }
    }

    func testKLCodeStatisticsAreColumnSums() throws {
        let c = try makeCase(hidden: [], latent: 5, code: .sigmoid, loss: .bce, penalty: .kl, n: 3, seed: 6)
        let m = c.model
        m.forward(3, noise: nil)
        m.codeStats[0] = 123  // stale values must be overwritten
        m.accumulateCodeStatistics(3)
        let want = (0..<5).map { j in (0..<3).reduce(0.0) { $0 + Double(m.code[$1 * 5 + j]) } }
        Compare.close("code statistics", m.codeStats.array, want, atol: 1e-6)
    }

    func contractiveCase(weight: Float) throws -> Case {
        try makeCase(hidden: [], latent: 8, code: .sigmoid, loss: .mse, penalty: .contractive,
                     objective: { $0.contractiveWeight = weight }, seed: 7)
    }

    func testContractivePenalty() throws {
        checkModel("contractive", try contractiveCase(weight: 1))
    }

    func testContractivePenaltyIsolated() throws {
        try checkPenaltyIsolated("contractive", w1: 0.5, w2: 2) { try contractiveCase(weight: $0) }
    }

    func testContractivePenaltyIsJacobianNorm() throws {
        // The closed form is ‖∂h/∂x‖²_F: compare with a numerical Jacobian of the encoder.
        let c = try makeCase(hidden: [], latent: 4, code: .sigmoid, loss: .mse, penalty: .contractive,
                             objective: { $0.contractiveWeight = 1 }, n: 1, seed: 8)
        let m = c.model
        _ = ModelGradientTests.analytic(c)
        let value = ModelGradientTests.objective(c).penalty
        let x = m.target.pointer
        let eps: Float = 1e-2
        var frob = 0.0
        for i in 0..<m.inputDim {
            let saved = x[i]
            x[i] = saved + eps
            m.encode(1)
            let up = (0..<4).map { Double(m.code[$0]) }
            x[i] = saved - eps
            m.encode(1)
            let down = (0..<4).map { Double(m.code[$0]) }
            x[i] = saved
            for j in 0..<4 {
                let dj = (up[j] - down[j]) / (Double(saved + eps) - Double(saved - eps))
                frob += dj * dj
            }
        }
        Compare.close("penalty vs numerical Jacobian", value, frob, rtol: 1e-3)
        let sums = ModelGradientTests.analytic(c)
        Compare.close("StepSums.penalty vs numerical Jacobian", sums.penalty, frob, rtol: 1e-3)
    }

    func testContractiveNeedsSigmoidCode() {
        let spec = ModelSpec.mirroredMLP(name: "t", summary: "t", hidden: [], latent: 4, act: .relu,
                                         codeActivation: .relu, initScheme: .torch, loss: .mse, penalty: .contractive)
        assertAETError("contractive relu", contains: ["contractive", "sigmoid"], exitCode: ExitCode.usage) {
            _ = try Autoencoder(spec: spec, objective: Objective(), maxBatch: 2)
        }
    }

    // MARK: VAE

    func testVAEThroughReparameterisation() throws {
        let c = try makeCase(hidden: [16], latent: 3, code: .identity, loss: .bce, variational: true,
                             objective: { $0.beta = 0.5 }, seed: 9)
        // The same noise key draws the same ε: the objective is a deterministic function of θ.
        let a = ModelGradientTests.objective(c).total, b = ModelGradientTests.objective(c).total
        XCTAssertEqual(a, b)
        // ε is not zero (the sampling path is really exercised).
        let m = c.model
        let eps = (0..<(c.n * m.latent)).map { m.eps[$0] }
        XCTAssertGreaterThan(eps.map { abs($0) }.max()!, 0.1)
        checkModel("vae", c)
    }

    func testVAEMSEAndL1() throws {
        checkModel("vae-mse", try makeCase(hidden: [16], latent: 2, code: .identity, loss: .mse, variational: true, seed: 10))
        checkModel("vae-l1", try makeCase(hidden: [16], latent: 2, code: .identity, loss: .l1, variational: true,
                                          objective: { $0.beta = 2 }, seed: 11, binaryTargets: true))
    }

    /// The KL part of the VAE gradient on its own: it is small next to a 784-pixel summed
    /// reconstruction, so it is isolated from two models that differ only in β (see
    /// checkPenaltyIsolated), with μ and log σ² pushed away from the prior so it is sizeable.
    func testVAEKLGradientAndBeta() throws {
        let (b1, b2): (Float, Float) = (0.5, 3)
        func make(_ beta: Float) throws -> Case {
            let c = try makeCase(hidden: [16], latent: 3, code: .identity, loss: .bce, variational: true,
                                 objective: { $0.beta = beta }, seed: 16)
            let codeBias = c.model.tensors.first { $0.name == "encoder.2.bias" }!
            for j in 0..<6 { c.model.params[codeBias.offset + j] = j < 3 ? Float(j) - 1.2 : 0.8 - 0.5 * Float(j - 3) }
            return c
        }
        // Same recon and KL sums; the loss weighs the KL by β.
        let c1 = try make(b1), c2 = try make(b2)
        let s1 = ModelGradientTests.analytic(c1), s2 = ModelGradientTests.analytic(c2)
        XCTAssertEqual(s1.recon, s2.recon)
        XCTAssertEqual(s1.penalty, s2.penalty)
        Compare.close("β₁ loss", s1.loss, s1.recon + Double(b1) * s1.penalty, rtol: 1e-9)
        Compare.close("β₂ loss", s2.loss, s2.recon + Double(b2) * s2.penalty, rtol: 1e-9)
        XCTAssertGreaterThan(s1.penalty, 1)
        try checkPenaltyIsolated("vae kl", w1: b1, w2: b2, make: make)
    }

    // MARK: data-parallel decomposition

    /// Splitting a batch into two "ranks" (globalCount = n, global code statistics, batch terms
    /// on one part only, noise keyed by the global index) gives the full-batch gradient and sums.
    func checkSplit(_ what: String, _ c: Case, file: StaticString = #filePath, line: UInt = #line) {
        let m = c.model, n = c.n, d = m.inputDim, L = m.latent
        let full = ModelGradientTests.analytic(c)
        let fullGrads = Array(m.grads.array[0..<m.parameterCount])
        let all = m.target.array
        let cut = n / 2
        let parts = [(0, cut), (cut, n - cut)]
        func load(_ p: (Int, Int)) {
            for i in 0..<(p.1 * d) { m.target[i] = all[p.0 * d + i] }
        }
        func noise(_ p: (Int, Int)) -> (seed: UInt64, step: Int, firstIndex: Int)? {
            c.noise.map { ($0.seed, $0.step, $0.firstIndex + p.0) }
        }
        var stats = [Float](repeating: 0, count: L)
        if m.needsBatchStatistics {
            for p in parts {
                load(p)
                m.forward(p.1, noise: noise(p))
                m.accumulateCodeStatistics(p.1)
                for j in 0..<L { stats[j] += m.codeStats[j] }
            }
        }
        // Each part's backward writes its own gradient (as each rank does); their sum is compared.
        var summed = [Float](repeating: 0, count: m.parameterCount)
        var loss = 0.0
        for (k, p) in parts.enumerated() {
            load(p)
            m.grads.pointer.update(repeating: .nan, count: m.grads.count)
            m.prepareGrads(p.1)
            m.forward(p.1, noise: noise(p))
            for j in 0..<L { m.codeStats[j] = stats[j] }
            loss += m.backward(p.1, globalCount: n, batchTerms: k == 0).loss
            for i in 0..<m.parameterCount { summed[i] += m.grads[i] }
        }
        Compare.close("\(what): split loss", loss, full.loss, rtol: 1e-5, file: file, line: line)
        let big = fullGrads.reduce(0) { max($0, Double(abs($1))) }
        XCTAssertGreaterThan(big, 0, file: file, line: line)
        Compare.close("\(what): split gradient", summed, fullGrads, atol: 1e-4 * big, file: file, line: line)
        for i in 0..<(n * d) { m.target[i] = all[i] }
    }

    func testSplitBatchEqualsFullBatch() throws {
        checkSplit("plain", try makeCase(hidden: [8], latent: 4, code: .identity, loss: .mse, n: 5, seed: 12))
        checkSplit("sparse-kl", try makeCase(hidden: [8], latent: 4, code: .sigmoid, loss: .bce, penalty: .kl,
                                             objective: { $0.sparsityWeight = 0.1 }, n: 5, seed: 13))
        checkSplit("contractive", try makeCase(hidden: [], latent: 4, code: .sigmoid, loss: .bce, penalty: .contractive,
                                               objective: { $0.contractiveWeight = 1 }, n: 5, seed: 14))
        checkSplit("vae", try makeCase(hidden: [8], latent: 2, code: .identity, loss: .bce, variational: true, n: 5, seed: 15))
    }

    func testParameterLayoutFollowsStateDict() throws {
        let c = try makeCase(hidden: [16], latent: 6, code: .identity, loss: .mse)
        let names = c.model.tensors.map(\.name)
        // tanh hidden layers are Linear + Tanh (2 modules); the linear code layer is 1.
        XCTAssertEqual(names, ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
                               "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"])
        XCTAssertEqual(c.model.tensors.map(\.shape), [[16, 784], [16], [6, 16], [6], [16, 6], [16], [784, 16], [784]])
        XCTAssertEqual(c.model.parameterCount, c.model.tensors.reduce(0) { $0 + $1.count })
    }

    /// Dense layers overwrite their gradients instead of adding, so a step zeroes only the rest.
    /// With an empty slice (n = 0) backward writes nothing, so everything must be zeroed: a rank
    /// with no samples joins the exchange with zeros, never with the previous step's gradient.
    func testEmptySliceLeavesZeroGradients() throws {
        for c in [try makeCase(hidden: [8], latent: 4, code: .identity, loss: .mse, n: 3, seed: 21),
                  try makeCase(hidden: [], latent: 4, code: .sigmoid, loss: .bce, penalty: .contractive,
                               objective: { $0.contractiveWeight = 1 }, n: 3, seed: 22)] {
            let m = c.model
            _ = ModelGradientTests.analytic(c)  // a real step first: non-zero gradients everywhere
            XCTAssertGreaterThan((0..<m.parameterCount).filter { m.grads[$0] != 0 }.count, m.parameterCount / 2)
            m.prepareGrads(0)
            m.forward(0, noise: nil)
            let s = m.backward(0, globalCount: 1, batchTerms: false)
            XCTAssertEqual(s.loss, 0)
            XCTAssertEqual((0..<(m.parameterCount + Autoencoder.extraSlots)).filter { m.grads[$0] != 0 }.count, 0)
        }
    }
}
