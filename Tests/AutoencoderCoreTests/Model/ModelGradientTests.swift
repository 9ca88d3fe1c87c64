import Foundation
import XCTest
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
        var obj = Objective()
        obj.loss = loss
        objective(&obj)
        let m = try Autoencoder(spec: spec, objective: obj, maxBatch: n)
        m.initialize(.torch, seed: seed)
        var g = SplitMix64(seed: seed &+ 99)
        for i in 0..<(n * m.inputDim) {
            let u = g.nextFloat()
            m.target[i] = binaryTargets ? (u < 0.3 ? 1 : 0) : u
        }
        m.corrupted = false
        return Case(model: m, n: n, noise: variational ? (seed: 42, step: 7, firstIndex: 5) : nil)
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

    /// Checks (1/n)·dL/dθ from `backward` against central differences of L/n over ~200
    /// coordinates, and the reported sums against the Double objective.
    func checkModel(_ what: String, _ c: Case, h: Float = 5e-3, rtol: Double = 2e-2, atolFraction: Double = 2e-3,
                    per: Int = 40, file: StaticString = #filePath, line: UInt = #line) {
        let m = c.model, n = Double(c.n)
        let sums = ModelGradientTests.analytic(c)
        let grads = m.grads.array
        let ref = ModelGradientTests.objective(c)
        XCTAssertTrue(ref.total.isFinite, "\(what): objective \(ref.total)", file: file, line: line)
        XCTAssertEqual(sums.loss, ref.total, accuracy: 1e-5 * abs(ref.total), "\(what): StepSums.loss", file: file, line: line)
        XCTAssertEqual(sums.recon, ref.recon, accuracy: 1e-5 * abs(ref.recon), "\(what): StepSums.recon", file: file, line: line)
        XCTAssertEqual(sums.penalty, ref.penalty, accuracy: 1e-5 * abs(ref.penalty) + 1e-9, "\(what): StepSums.penalty", file: file, line: line)
        if m.spec.penalty != .none {
            XCTAssertGreaterThan(ref.penalty, 0.05 * ref.recon, "\(what): the penalty is too small to be checked", file: file, line: line)
        }

        let coords = ModelGradientTests.coordinates(m, per: per, seed: 17)
        let p = m.params.pointer
        var numeric: [Double] = []
        for (_, i) in coords {
            numeric.append(GradCheck.centralDifference(p, i, h: h) { ModelGradientTests.objective(c).total } / n)
        }
        // Absolute slack relative to the typical gradient size of each tensor.
        var scale: [String: Double] = [:]
        for ((name, i), _) in zip(coords, numeric) { scale[name] = max(scale[name] ?? 0, abs(Double(grads[i]))) }
        var failures = 0, worst = 0.0, worstText = ""
        for (k, (name, i)) in coords.enumerated() {
            let a = Double(grads[i]), num = numeric[k]
            let tol = atolFraction * (scale[name] ?? 0) + 1e-9 + rtol * max(abs(a), abs(num))
            let ratio = abs(a - num) / tol
            if ratio > worst { worst = ratio; worstText = "\(name)[\(i)]: analytic \(a) numeric \(num)" }
            if ratio > 1 {
                failures += 1
                if failures <= 5 { XCTFail("\(what): \(name)[\(i)] analytic \(a) vs numeric \(num)", file: file, line: line) }
            }
        }
        XCTAssertEqual(failures, 0, "\(what): \(failures) of \(coords.count) coordinates off; worst \(worstText)", file: file, line: line)
        // Every tensor must actually receive gradient (a dropped term would leave zeros).
        for t in m.tensors {
            let maxAbs = (t.offset..<(t.offset + t.count)).map { abs(grads[$0]) }.max() ?? 0
            XCTAssertGreaterThan(maxAbs, 0, "\(what): \(t.name) has an all-zero gradient", file: file, line: line)
        }
        // The extra slots after the gradients are left alone by backward.
        for e in m.parameterCount..<(m.parameterCount + Autoencoder.extraSlots) {
            XCTAssertEqual(grads[e], 0, "\(what): extra slot \(e)", file: file, line: line)
        }
        if ProcessInfo.processInfo.environment["AETRAIN_TEST_VERBOSE"] != nil {
            print("\(what): \(coords.count) coordinates, worst err/tol \(worst) at \(worstText)")
        }
    }

    // MARK: plain reconstruction losses

    func testPlainMSE() throws {
        checkModel("mse", try makeCase(hidden: [16], latent: 6, code: .identity, loss: .mse))
    }

    func testPlainBCE() throws {
        checkModel("bce", try makeCase(hidden: [16], latent: 6, act: .sigmoid, code: .tanh, loss: .bce, seed: 2))
    }

    func testPlainL1() throws {
        // Binary targets: y = σ(z) ∈ (0, 1) never meets them, so |y − x| has no kink.
        checkModel("l1", try makeCase(hidden: [16], latent: 6, code: .identity, loss: .l1, seed: 3, binaryTargets: true))
    }

    // MARK: penalties

    func testSparseL1Penalty() throws {
        // tanh code: both signs of h, so sign(h) is exercised. Large λ makes the term matter.
        // The first seed whose codes all keep |h| ≥ 0.02 keeps the FD step (which moves a code
        // by at most ~2e-3 here) off the |h| kink.
        var chosen: Case?
        for seed in UInt64(4)..<UInt64(64) {
            let c = try makeCase(hidden: [12], latent: 8, code: .tanh, loss: .bce, penalty: .l1,
                                 objective: { $0.sparsityWeight = 0.5 }, seed: seed)
            c.model.forward(c.n, noise: nil)
            let codes = (0..<(c.n * c.model.latent)).map { c.model.code[$0] }
            if codes.allSatisfy({ abs($0) >= 0.02 }) && codes.contains(where: { $0 < 0 }) && codes.contains(where: { $0 > 0 }) {
                chosen = c
                break
            }
        }
        let c = try XCTUnwrap(chosen, "no seed keeps the codes off the kink")
        checkModel("sparse-l1", c, h: 2e-3)
    }

    func testSparseKLPenalty() throws {
        let c = try makeCase(hidden: [12], latent: 8, code: .sigmoid, loss: .bce, penalty: .kl,
                             objective: { $0.sparsityWeight = 0.1; $0.sparsityTarget = 0.2 }, n: 4, seed: 5)
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
        XCTAssertTrue(m.grads.array == withTerms, "batchTerms changes the gradient")
    }

    func testKLCodeStatisticsAreColumnSums() throws {
        let c = try makeCase(hidden: [], latent: 5, code: .sigmoid, loss: .bce, penalty: .kl, n: 3, seed: 6)
        let m = c.model
        m.forward(3, noise: nil)
        m.codeStats[0] = 123  // stale values must be overwritten
        m.accumulateCodeStatistics(3)
        for j in 0..<5 {
            let want = (0..<3).reduce(0.0) { $0 + Double(m.code[$1 * 5 + j]) }
            XCTAssertEqual(Double(m.codeStats[j]), want, accuracy: 1e-6)
        }
    }

    func testContractivePenalty() throws {
        let c = try makeCase(hidden: [], latent: 8, code: .sigmoid, loss: .mse, penalty: .contractive,
                             objective: { $0.contractiveWeight = 1 }, seed: 7)
        checkModel("contractive", c)
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
        XCTAssertEqual(value, frob, accuracy: 1e-3 * frob)
        let sums = ModelGradientTests.analytic(c)
        XCTAssertEqual(sums.penalty, frob, accuracy: 1e-3 * frob)
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
    /// reconstruction, so isolate it as (g(β₂) − g(β₁)) / (β₂ − β₁) = (1/n)·d(Σ KL)/dθ, from two
    /// identical models that differ only in β, and compare with central differences of Σ KL.
    func testVAEKLGradientAndBeta() throws {
        let b1: Float = 0.5, b2: Float = 3
        let c1 = try makeCase(hidden: [16], latent: 3, code: .identity, loss: .bce, variational: true,
                              objective: { $0.beta = b1 }, seed: 16)
        let c2 = try makeCase(hidden: [16], latent: 3, code: .identity, loss: .bce, variational: true,
                              objective: { $0.beta = b2 }, seed: 16)
        // Push μ and log σ² away from the prior so the KL term and its gradient are sizeable.
        let codeBias = c1.model.tensors.first { $0.name == "encoder.2.bias" }!
        for m in [c1.model, c2.model] {
            for j in 0..<6 { m.params[codeBias.offset + j] = j < 3 ? Float(j) - 1.2 : 0.8 - 0.5 * Float(j - 3) }
        }
        let s1 = ModelGradientTests.analytic(c1), g1 = c1.model.grads.array
        let s2 = ModelGradientTests.analytic(c2), g2 = c2.model.grads.array
        // Same recon and KL sums; the loss weighs the KL by β.
        XCTAssertEqual(s1.recon, s2.recon)
        XCTAssertEqual(s1.penalty, s2.penalty)
        XCTAssertEqual(s1.loss, s1.recon + Double(b1) * s1.penalty, accuracy: 1e-9 * s1.loss)
        XCTAssertEqual(s2.loss, s2.recon + Double(b2) * s2.penalty, accuracy: 1e-9 * s2.loss)
        XCTAssertGreaterThan(s1.penalty, 1)
        let m = c1.model, n = Double(c1.n)
        let p = m.params.pointer
        var failures = 0
        var checked = 0
        for t in m.tensors {
            for i in t.offset..<(t.offset + t.count) where t.name.hasPrefix("decoder") {
                // KL does not depend on the decoder.
                XCTAssertEqual(g2[i], g1[i], accuracy: 1e-6 * max(abs(g1[i]), 1e-3), "\(t.name)[\(i)] decoder gradient depends on β")
                if abs(g2[i] - g1[i]) > 1e-6 * max(abs(g1[i]), 1e-3) { return }
            }
        }
        for (name, i) in ModelGradientTests.coordinates(m, per: 40, seed: 3) where name.hasPrefix("encoder") {
            let a = (Double(g2[i]) - Double(g1[i])) / Double(b2 - b1)
            let num = GradCheck.centralDifference(p, i, h: 5e-3) { ModelGradientTests.objective(c1).penalty } / n
            checked += 1
            // The difference of two Float gradients loses ~1e-7·|g| / Δβ of absolute precision.
            let slack = 3e-6 * max(abs(Double(g1[i])), abs(Double(g2[i]))) / Double(b2 - b1)
            if abs(a - num) > 2e-2 * max(abs(a), abs(num)) + slack + 1e-7 {
                failures += 1
                if failures <= 5 { XCTFail("KL gradient \(name)[\(i)]: analytic \(a) vs numeric \(num)") }
            }
        }
        XCTAssertGreaterThan(checked, 100)
        XCTAssertEqual(failures, 0)
    }

    // MARK: data-parallel decomposition

    /// Splitting a batch into two "ranks" (globalCount = n, global code statistics, batch terms
    /// on one part only, noise keyed by the global index) gives the full-batch gradient and sums.
    func checkSplit(_ what: String, _ c: Case, file: StaticString = #filePath, line: UInt = #line) {
        let m = c.model, n = c.n, d = m.inputDim, L = m.latent
        let full = ModelGradientTests.analytic(c)
        let fullGrads = m.grads.array
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
            m.prepareGrads(p.1)
            m.forward(p.1, noise: noise(p))
            for j in 0..<L { m.codeStats[j] = stats[j] }
            loss += m.backward(p.1, globalCount: n, batchTerms: k == 0).loss
            for i in 0..<m.parameterCount { summed[i] += m.grads[i] }
        }
        XCTAssertEqual(loss, full.loss, accuracy: 1e-5 * abs(full.loss), "\(what): split loss", file: file, line: line)
        var worst: Float = 0, big: Float = 0
        for i in 0..<m.parameterCount {
            worst = max(worst, abs(summed[i] - fullGrads[i]))
            big = max(big, abs(fullGrads[i]))
        }
        XCTAssertLessThanOrEqual(worst, 1e-4 * big, "\(what): split gradient differs by \(worst) (max |g| \(big))", file: file, line: line)
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
