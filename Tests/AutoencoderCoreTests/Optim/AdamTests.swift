import Foundation
import XCTest
@testable import AutoencoderCore

/// Adam / AdamW against an independent Double implementation of the algorithm as documented for
/// torch.optim.Adam and torch.optim.AdamW, and against hand-computed steps.
final class AdamTests: XCTestCase {
    /// torch.optim.Adam (L2: g += wd·p) / AdamW (p *= 1 − lr·wd first), in Double. The
    /// hyperparameters are the config's Double values.
    struct Reference {
        let lr, b1, b2, eps, wd: Double
        let decoupled: Bool
        var m: [Double], v: [Double]
        /// Σ over steps of |update| per parameter (scales the Float32 rounding allowance).
        var travelled: [Double]
        var t = 0

        init(_ c: AdamConfig, count: Int) {
            lr = Double(c.lr); b1 = Double(c.beta1); b2 = Double(c.beta2); eps = Double(c.eps); wd = Double(c.weightDecay)
            decoupled = c.decoupled
            m = [Double](repeating: 0, count: count)
            v = [Double](repeating: 0, count: count)
            travelled = [Double](repeating: 0, count: count)
        }

        mutating func step(_ p: inout [Double], _ grad: [Double]) {
            t += 1
            let bc1 = 1 - pow(b1, Double(t)), bc2 = 1 - pow(b2, Double(t))
            for i in 0..<p.count {
                var g = grad[i]
                if decoupled { p[i] *= 1 - lr * wd } else { g += wd * p[i] }
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                let denom = v[i].squareRoot() / bc2.squareRoot() + eps
                let delta = lr / bc1 * m[i] / denom
                p[i] -= delta
                travelled[i] += abs(delta)
            }
        }
    }

    /// A deterministic gradient for step t and parameter i (varied signs and magnitudes, one zero).
    static func gradient(_ t: Int, _ i: Int, _ p: Float) -> Float {
        if i == 3 { return 0 }                        // a parameter whose gradient is always zero
        let base: [Float] = [0.5, -2, 1e-3, 0, 30, -7e-4, 0.25, -0.125]
        return base[i] * (1 + 0.3 * Float(t)) * (t % 2 == 0 ? -1 : 1) + 0.1 * p
    }

    func runAgainstReference(_ c: AdamConfig, steps: Int = 5, file: StaticString = #filePath, line: UInt = #line) {
        let p0: [Float] = [1, -0.5, 0.25, 0.75, -3, 2e-3, 0, 10]
        let n = p0.count
        let adam = Adam(count: n, config: c)
        let params = FloatBuffer(n), grads = FloatBuffer(n)
        for i in 0..<n { params[i] = p0[i] }
        var ref = Reference(c, count: n)
        var rp = p0.map(Double.init)
        for t in 1...steps {
            // The same Float gradient goes into both (computed from the Swift parameters).
            for i in 0..<n { grads[i] = AdamTests.gradient(t, i, params[i]) }
            adam.update(params: params.pointer, grads: grads.pointer)
            ref.step(&rp, (0..<n).map { Double(grads[$0]) })
            XCTAssertEqual(adam.step, t, file: file, line: line)
            for i in 0..<n {
                let got = Double(params[i]), want = rp[i]
                // 1e-6 relative, plus what Float32 arithmetic legitimately costs: 1 − β₂ᵗ is formed
                // in Float (cancellation: up to ~1e-5 relative on an early step's size) and p is
                // rounded to Float after every step. A wrong bias correction, eps placement or
                // weight decay is off by far more than 2e-5 of the distance travelled.
                let tol = 1e-6 * max(abs(want), 1e-3) + 2e-5 * ref.travelled[i] + Double(Float(want).ulp) * Double(t)
                XCTAssertEqual(got, want, accuracy: tol, "step \(t) param \(i)", file: file, line: line)
                XCTAssertEqual(Double(adam.m[i]), ref.m[i], accuracy: 1e-5 * abs(ref.m[i]) + 1e-12, "step \(t) m[\(i)]", file: file, line: line)
                XCTAssertEqual(Double(adam.v[i]), ref.v[i], accuracy: 1e-5 * abs(ref.v[i]) + 1e-15, "step \(t) v[\(i)]", file: file, line: line)
            }
        }
    }

    func testDefaultsMatchPyTorch() {
        let c = AdamConfig()
        XCTAssertEqual(c.lr, 1e-3)
        XCTAssertEqual(c.beta1, 0.9)
        XCTAssertEqual(c.beta2, 0.999)
        XCTAssertEqual(c.eps, 1e-8)
        XCTAssertEqual(c.weightDecay, 0)
        XCTAssertFalse(c.decoupled)
        runAgainstReference(c)
    }

    func testLargeLearningRate() {
        var c = AdamConfig()
        c.lr = 0.1
        runAgainstReference(c)
    }

    func testL2WeightDecay() {
        var c = AdamConfig()
        c.lr = 0.01
        c.weightDecay = 0.1
        runAgainstReference(c)
    }

    func testAdamWDecoupledWeightDecay() {
        var c = AdamConfig()
        c.lr = 0.01
        c.weightDecay = 0.1
        c.decoupled = true
        runAgainstReference(c)
        // With zero gradients AdamW only shrinks; Adam+L2 instead takes a full-size step.
        c.lr = 0.5
        c.weightDecay = 0.2
        let adam = Adam(count: 1, config: c)
        let p = FloatBuffer(1), g = FloatBuffer(1)
        p[0] = 2
        adam.update(params: p.pointer, grads: g.pointer)
        XCTAssertEqual(p[0], 2 * (1 - 0.5 * 0.2), accuracy: 1e-6)
        c.decoupled = false
        let adam2 = Adam(count: 1, config: c)
        p[0] = 2
        adam2.update(params: p.pointer, grads: g.pointer)
        XCTAssertEqual(p[0], 2 - 0.5, accuracy: 1e-6)  // g = wd·p > 0 → |update| = lr
    }

    func testCustomBetasAndEps() {
        var c = AdamConfig()
        c.lr = 0.05
        c.beta1 = 0.5
        c.beta2 = 0.9
        c.eps = 1e-3
        runAgainstReference(c, steps: 5)
        c.beta1 = 0
        c.beta2 = 0.99
        c.eps = 1e-6
        c.weightDecay = 0.01
        runAgainstReference(c, steps: 5)
    }

    func testStepOneMovesByLearningRate() {
        // Step 1: m̂ = g, v̂ = g², so with eps → 0 every parameter with g ≠ 0 moves by exactly lr
        // against the sign of its gradient, whatever the gradient's size.
        var c = AdamConfig()
        c.lr = 1e-3
        c.eps = 0
        let g: [Float] = [0.5, -2, 1e-3, 1e4, -3e-5]
        let adam = Adam(count: g.count, config: c)
        let p = FloatBuffer(g.count), gb = FloatBuffer(g.count)
        for i in 0..<g.count { gb[i] = g[i] }
        adam.update(params: p.pointer, grads: gb.pointer)
        for i in 0..<g.count {
            XCTAssertEqual(p[i], g[i] > 0 ? -1e-3 : 1e-3, accuracy: 1e-9, "param \(i)")
        }
        // With the default eps the tiny gradient moves a little less: lr·|g|/(|g| + eps).
        c.eps = 1e-8
        let a2 = Adam(count: 1, config: c)
        let q = FloatBuffer(1), h = FloatBuffer(1)
        h[0] = 1e-8
        a2.update(params: q.pointer, grads: h.pointer)
        XCTAssertEqual(q[0], -0.5e-3, accuracy: 1e-8)
    }

    func testStepTwoHandComputed() {
        // lr 0.1, β = (0.9, 0.999), eps 0, p₀ = 0, gradients 1 then 2 (and 1 then −3):
        //   step 1: m = 0.1, v = 0.001, p₁ = −0.1
        //   step 2: m = 0.9·0.1 + 0.1·2 = 0.29, v = 0.999·0.001 + 0.001·4 = 0.004999
        //           m̂ = 0.29/0.19, v̂ = 0.004999/0.001999, p₂ = −0.1 − 0.1·m̂/√v̂ = −0.196518202582
        //   (g₂ = −3: m = −0.21, v = 0.009999, p₂ = −0.1 + 0.1·(0.21/0.19)/√(0.009999/0.001999)
        //           = −0.050581016670)
        var c = AdamConfig()
        c.lr = 0.1
        c.eps = 0
        let adam = Adam(count: 2, config: c)
        let p = FloatBuffer(2), g = FloatBuffer(2)
        g[0] = 1; g[1] = 1
        adam.update(params: p.pointer, grads: g.pointer)
        XCTAssertEqual(p[0], -0.1, accuracy: 1e-7)
        XCTAssertEqual(adam.m[0], 0.1, accuracy: 1e-7)
        // v carries (1 − β₂) formed in Double and rounded to Float, as PyTorch does: Float(0.001).
        XCTAssertEqual(adam.v[0], Float(1 - 0.999), accuracy: 1e-10)
        XCTAssertEqual(adam.v[0], 0.001, accuracy: 2e-5 * 0.001)
        g[0] = 2; g[1] = -3
        adam.update(params: p.pointer, grads: g.pointer)
        XCTAssertEqual(adam.m[0], 0.29, accuracy: 1e-7)
        XCTAssertEqual(adam.v[0], 0.004999, accuracy: 2e-5 * 0.004999)
        XCTAssertEqual(adam.m[1], -0.21, accuracy: 1e-7)
        XCTAssertEqual(adam.v[1], 0.009999, accuracy: 2e-5 * 0.009999)
        let hand0 = -0.1 - 0.1 * (0.29 / 0.19) / (0.004999 / 0.001999).squareRoot()
        let hand1 = -0.1 + 0.1 * (0.21 / 0.19) / (0.009999 / 0.001999).squareRoot()
        XCTAssertEqual(hand0, -0.196518202582, accuracy: 1e-11)
        XCTAssertEqual(hand1, -0.050581016670, accuracy: 1e-11)
        // Float β₂ = 0.999 is 0.99900001287, so 1 − β₂² differs from 0.001999 by ~1e−5 relative.
        XCTAssertEqual(Double(p[0]), hand0, accuracy: 1e-5)
        XCTAssertEqual(Double(p[1]), hand1, accuracy: 1e-5)
        XCTAssertEqual(adam.step, 2)
    }

    func testOnlyFirstCountEntriesUpdated() {
        // The gradient buffer carries extra slots after the parameters; they must not be read
        // into parameters beyond `count` (params has exactly `count` entries).
        let adam = Adam(count: 3, config: AdamConfig())
        let p = FloatBuffer(4), g = FloatBuffer(4)
        for i in 0..<4 { p[i] = 1; g[i] = 1 }
        adam.update(params: p.pointer, grads: g.pointer)
        XCTAssertEqual(p[3], 1)
        XCTAssertNotEqual(p[2], 1)
    }

    /// --grad-sync shared: each rank updates its slice from the sum of every rank's gradient
    /// buffer. N "ranks" each updating one slice must leave exactly the parameters and moments of
    /// one update from the summed gradient ((g0 + g1) + g2 ..., in Float), for Adam and AdamW, over
    /// several steps; the published copy of each slice equals the parameters. 1–4 sources take
    /// the fused pass, 6 the blocked one.
    func testSlicedUpdateFromSummedSourcesEqualsOneUpdate() {
        for ranks in [1, 2, 3, 4, 6] {
            for decoupled in [false, true] {
                var c = AdamConfig()
                c.lr = 3e-3; c.weightDecay = 0.01; c.decoupled = decoupled
                let n = 1000 + 7 * ranks
                let bounds = (0...ranks).map { q in q == ranks ? n : min(n, (q * n / ranks) & ~15) }
                let whole = Adam(count: n, config: c)
                let sliced = (0..<ranks).map { _ in Adam(count: n, config: c) }
                let p1 = FloatBuffer(n), p2 = FloatBuffer(n), pub = FloatBuffer(n), sum = FloatBuffer(n)
                let init0 = GradCheck.random(n, seed: 3)
                for i in 0..<n { p1[i] = init0[i]; p2[i] = init0[i] }
                let grads = (0..<ranks).map { _ in FloatBuffer(n) }
                let sources = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: ranks)
                defer { sources.deallocate() }
                for r in 0..<ranks { sources[r] = UnsafePointer(grads[r].pointer) }
                for step in 0..<4 {
                    for r in 0..<ranks {
                        let g = GradCheck.random(n, seed: UInt64(100 * step + r), -0.1, 0.1)
                        for i in 0..<n { grads[r][i] = g[i] }
                    }
                    for i in 0..<n {
                        var t = grads[0][i]
                        for r in 1..<max(ranks, 1) { t += grads[r][i] }
                        sum[i] = t
                    }
                    XCTAssertTrue(whole.update(params: p1.pointer, grads: sum.pointer))
                    for r in 0..<ranks {
                        XCTAssertTrue(sliced[r].update(params: p2.pointer, gradientSources: sources, sourceCount: ranks,
                                                       range: bounds[r]..<bounds[r + 1], publish: pub.pointer))
                    }
                }
                for r in 0..<ranks {
                    for i in bounds[r]..<bounds[r + 1] {
                        XCTAssertEqual(p2[i], p1[i], "\(ranks) ranks, decoupled \(decoupled): parameter \(i)")
                        XCTAssertEqual(pub[i], p2[i], "published \(i)")
                        XCTAssertEqual(sliced[r].m[i], whole.m[i], "m \(i)")
                        XCTAssertEqual(sliced[r].v[i], whole.v[i], "v \(i)")
                    }
                    XCTAssertEqual(sliced[r].step, 4)
                }
                XCTAssertNotEqual(p1[0], init0[0], "the parameters moved")
            }
        }
    }

    /// The Adam pass reports an Inf or NaN gradient (the summed one, for the sliced update).
    func testUpdateFlagsNonFiniteGradients() {
        for bad in [Float.nan, .infinity, -.infinity] {
            let adam = Adam(count: 40, config: AdamConfig())
            let p = FloatBuffer(40), g = FloatBuffer(40), h = FloatBuffer(40)
            XCTAssertTrue(adam.update(params: p.pointer, grads: g.pointer))
            g[37] = bad
            XCTAssertFalse(adam.update(params: p.pointer, grads: g.pointer))
            let sources = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: 2)
            defer { sources.deallocate() }
            sources[0] = UnsafePointer(h.pointer); sources[1] = UnsafePointer(g.pointer)
            XCTAssertTrue(adam.update(params: p.pointer, gradientSources: sources, sourceCount: 2, range: 0..<32))
            XCTAssertFalse(adam.update(params: p.pointer, gradientSources: sources, sourceCount: 2, range: 32..<40))
        }
    }
}
