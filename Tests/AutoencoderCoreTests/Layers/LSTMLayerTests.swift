import CKernels
import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

final class LSTMLayerTests: XCTestCase {
    // MARK: Gradient checks

    /// Runs `body` once with each gate-pass implementation this CPU has: the AVX-512 one (exp16,
    /// when the CPU has AVX-512) and the vectorised C one (every CPU), naming the path.
    private func forEachGatePath(_ body: (String) -> Void) {
        let had = aet_avx512_kernels(-1)
        defer { _ = aet_avx512_kernels(had) }
        _ = aet_avx512_kernels(0)
        body("C path")
        _ = aet_avx512_kernels(1)
        if aet_avx512_kernels(-1) == 1 { body("AVX-512 path") }
    }

    func testLSTMEncoderGradients() {
        // (steps, features, hidden, input range): T = 1 has no recurrent term; the wide input
        // range pushes gates towards saturation; hidden 10 takes backward's 8-lane path and its tail;
        // hidden 20 one full 16-lane block of the AVX-512 path and a masked one.
        let cases: [(Int, Int, Int, Float)] = [(4, 3, 5, 1), (1, 2, 3, 1), (5, 2, 4, 3), (3, 2, 10, 1), (3, 2, 20, 1)]
        forEachGatePath { path in
            for (i, (t, f, h, range)) in cases.enumerated() {
                let layer = LSTMEncoder(steps: t, features: f, hidden: h)
                checkLayerGradients(layer, batch: 3, seed: UInt64(10 + i), h: 1e-2, rtol: 1e-3, atol: 3e-5,
                                    inputRange: (-range, range), name: "\(path), case \(i)")
            }
        }
    }

    func testLSTMDecoderGradients() {
        // (code, steps, features, hidden, input range)
        let cases: [(Int, Int, Int, Int, Float)] = [(2, 4, 3, 5, 1), (3, 1, 2, 3, 1), (2, 5, 4, 3, 3), (2, 3, 3, 9, 1), (2, 3, 2, 17, 1)]
        forEachGatePath { path in
            for (i, (c, t, f, h, range)) in cases.enumerated() {
                let layer = LSTMDecoder(code: c, steps: t, features: f, hidden: h)
                checkLayerGradients(layer, batch: 3, seed: UInt64(30 + i), h: 1e-2, rtol: 1e-3, atol: 3e-5,
                                    inputRange: (-range, range), name: "\(path), case \(i)")
            }
        }
    }

    /// The AVX-512 gate pass's exponential (exp16) against e^x in Double: within 2 ulp over the
    /// range the clamp keeps ([−87.3, 88.7]), NaN stays NaN, ±Inf clamp to the range's ends. The
    /// C path is glibc's vectorised expf (libmvec), documented within 4 ulp.
    func testExp16MatchesExpf() {
        var xs: [Float] = stride(from: Float(-87.3), through: 88.7, by: 0.0137).map { $0 }
        xs += [0, -0, 1e-8, -1e-8, 0.34657359, -0.34657359, 0.6931472, 20, -20]
        forEachGatePath { path in
            var ys = [Float](repeating: 0, count: xs.count)
            aet_exp(xs, &ys, xs.count)
            var worst: Double = 0, at: Float = 0
            for (x, y) in zip(xs, ys) {
                let ref = Foundation.exp(Double(x))
                let ulps = abs(Double(y) - ref) / Double(Float(ref).ulp)
                if !(ulps <= worst) { worst = ulps; at = x }
            }
            let bound: Double = path == "C path" ? 4 : 2
            XCTAssertLessThanOrEqual(worst, bound, "\(path): exp off by \(worst) ulp at x = \(at)")
            print("\(path): exp within \(worst) ulp (worst at x = \(at))")
            var special: [Float] = [.nan, .infinity, -.infinity]
            aet_exp(special, &special, 3)
            XCTAssertTrue(special[0].isNaN, "\(path): exp(NaN) = \(special[0])")
            XCTAssertTrue(special[1] >= 1e38, "\(path): exp(+Inf) = \(special[1])")
            XCTAssertTrue(special[2] >= 0 && special[2] <= 1.2e-38, "\(path): exp(-Inf) = \(special[2])")
            // the sigmoid's limits: 1 / (1 + e^-v) at ±100 is exactly 1 and (nearly) 0
            var big: [Float] = [-100, 100]
            aet_exp(big, &big, 2)
            XCTAssertEqual(1 / (1 + big[0]), 1, "\(path)")
            XCTAssertLessThan(1 / (1 + big[1]), 1e-37, "\(path)")
        }
    }

    // MARK: Forward against a naive reference

    /// One sample, in Double, straight from the nn.LSTM equations: returns h_t for every step.
    /// `inputs[t]` is the input vector at step t; gate rows are [i; f; g; o] blocks of H.
    private func naiveLSTM(inputs: [[Double]], wih: [Float], whh: [Float], bih: [Float], bhh: [Float],
                           hidden H: Int) -> [[Double]] {
        let I = inputs[0].count
        func sig(_ v: Double) -> Double { 1 / (1 + Foundation.exp(-v)) }
        var h = [Double](repeating: 0, count: H), c = [Double](repeating: 0, count: H)
        var out: [[Double]] = []
        for x in inputs {
            func z(_ gate: Int, _ j: Int) -> Double {
                let row = gate * H + j
                var acc = Double(bih[row]) + Double(bhh[row])
                for m in 0..<I { acc += Double(wih[row * I + m]) * x[m] }
                for m in 0..<H { acc += Double(whh[row * H + m]) * h[m] }
                return acc
            }
            var hNew = h
            for j in 0..<H {
                let ig = sig(z(0, j)), fg = sig(z(1, j)), gg = Foundation.tanh(z(2, j)), og = sig(z(3, j))
                c[j] = fg * c[j] + ig * gg
                hNew[j] = og * Foundation.tanh(c[j])
            }
            h = hNew
            out.append(h)
        }
        return out
    }

    /// Splits an LSTM's flat parameters into (W_ih, W_hh, b_ih, b_hh, rest).
    private func split(_ p: [Float], input I: Int, hidden H: Int) -> ([Float], [Float], [Float], [Float], [Float]) {
        let a = 4 * H * I, b = a + 4 * H * H, c = b + 4 * H, d = c + 4 * H
        return (Array(p[0..<a]), Array(p[a..<b]), Array(p[b..<c]), Array(p[c..<d]), Array(p[d...]))
    }

    /// Binds fresh parameter/gradient buffers, initialises and scales the parameters (larger
    /// weights make the gates nonlinear enough for the comparison to mean something).
    private func setUp(_ layer: Layer, scheme: InitScheme, seed: UInt64, scale: Float, maxBatch: Int)
        -> (FloatBuffer, FloatBuffer) {
        let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
        layer.bind(parameters: p.pointer, gradients: g.pointer)
        var rng = SplitMix64(seed: seed)
        layer.initialize(scheme, rng: &rng)
        for i in 0..<p.count { p[i] *= scale }
        // Glorot zeroes the biases: give them values so the bias paths are tested too.
        if scheme == .glorot {
            var b = SplitMix64(seed: seed + 1)
            for i in 0..<p.count where p[i] == 0 { p[i] = b.uniform(-0.5, 0.5) }
        }
        layer.reserve(maxBatch: maxBatch)
        return (p, g)
    }

    func testLSTMEncoderForwardMatchesNaive() {
        forEachGatePath { path in
            for H in [7, 20] { encoderForwardMatchesNaive(hidden: H, path: path) }
        }
    }

    private func encoderForwardMatchesNaive(hidden H: Int, path: String) {
        let (T, F, batch) = (6, 4, 3)
        for (k, (scheme, scale)) in [(InitScheme.torch, Float(2)), (.glorot, 1.5)].enumerated() {
            let layer = LSTMEncoder(steps: T, features: F, hidden: H)
            let (p, _) = setUp(layer, scheme: scheme, seed: UInt64(100 + k), scale: scale, maxBatch: batch)
            let (wih, whh, bih, bhh, rest) = split(p.array, input: F, hidden: H)
            XCTAssertTrue(rest.isEmpty)
            let xv = GradCheck.random(batch * T * F, seed: UInt64(200 + k), -2, 2)
            let y = FloatBuffer(batch * H)
            xv.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: batch) }
            var ref: [Double] = []
            for s in 0..<batch {
                let inputs = (0..<T).map { t in (0..<F).map { Double(xv[(s * T + t) * F + $0]) } }
                let hs = naiveLSTM(inputs: inputs, wih: wih, whh: whh, bih: bih, bhh: bhh, hidden: H)
                ref += hs[T - 1]
            }
            Compare.close("\(path), hidden \(H), \(scheme): encoder vs naive", y.array, ref, atol: 1e-5)
        }
    }

    func testLSTMDecoderForwardMatchesNaive() {
        forEachGatePath { path in
            for H in [7, 20] { decoderForwardMatchesNaive(hidden: H, path: path) }
        }
    }

    private func decoderForwardMatchesNaive(hidden H: Int, path: String) {
        let (C, T, F, batch) = (3, 6, 4, 3)
        for (k, (scheme, scale)) in [(InitScheme.torch, Float(2)), (.glorot, 1.5)].enumerated() {
            let layer = LSTMDecoder(code: C, steps: T, features: F, hidden: H)
            let (p, _) = setUp(layer, scheme: scheme, seed: UInt64(110 + k), scale: scale, maxBatch: batch)
            let (wih, whh, bih, bhh, rest) = split(p.array, input: C, hidden: H)
            XCTAssertEqual(rest.count, F * H + F)
            let wp = Array(rest[0..<(F * H)]), bp = Array(rest[(F * H)...])
            let xv = GradCheck.random(batch * C, seed: UInt64(210 + k), -2, 2)
            let y = FloatBuffer(batch * T * F)
            xv.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: batch) }
            var ref: [Double] = []
            for s in 0..<batch {
                let code = (0..<C).map { Double(xv[s * C + $0]) }
                let hs = naiveLSTM(inputs: Array(repeating: code, count: T), wih: wih, whh: whh, bih: bih, bhh: bhh,
                                   hidden: H)
                for t in 0..<T {
                    for o in 0..<F {
                        var v = Double(bp[o])
                        for j in 0..<H { v += Double(wp[o * H + j]) * hs[t][j] }
                        ref.append(v)
                    }
                }
            }
            Compare.close("\(path), hidden \(H), \(scheme): decoder vs naive", y.array, ref, atol: 1e-5)
        }
    }

    // MARK: Batch sizes

    func testSmallerBatchAndEmptyBatch() {
        // Reserved for 4 samples and run on 2 (twice, halves of the batch) must give the same
        // outputs, input gradients and accumulated parameter gradients as one batch of 4; batch 0
        // must touch nothing; dx == nil must not change the parameter gradients.
        let layers: [Layer] = [
            LSTMEncoder(steps: 5, features: 3, hidden: 4),
            LSTMDecoder(code: 3, steps: 5, features: 2, hidden: 4),
        ]
        for (t, layer) in layers.enumerated() {
            let s = assertHalvesMatchFullBatch(layer, seed: t, yAccuracy: 1e-6, name: "layer \(t)")
            // dx == nil: same parameter gradients.
            let no = layer.outputSize, gNil = FloatBuffer(layer.parameterCount)
            layer.bind(parameters: s.params.pointer, gradients: gNil.pointer)
            let y5 = FloatBuffer(4 * no), dy5 = FloatBuffer(4 * no)
            layer.forward(s.x.pointer, y5.pointer, batch: 4)
            for i in 0..<(4 * no) { dy5[i] = s.r[i] }
            layer.backward(x: s.x.pointer, y: y5.pointer, dy: dy5.pointer, dx: nil, batch: 4)
            XCTAssertEqual(gNil.array, s.grads.array, "layer \(t): dx == nil changed the parameter gradients")
        }
    }

    // MARK: Metadata

    func testLSTMEncoderMetadataAndInit() {
        let e = LSTMEncoder(steps: 28, features: 28, hidden: 64)
        XCTAssertEqual(e.inputSize, 28 * 28)
        XCTAssertEqual(e.outputSize, 64)
        XCTAssertEqual(e.parameterShapes.map(\.name), ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"])
        XCTAssertEqual(e.parameterShapes.map(\.shape), [[256, 28], [256, 64], [256], [256]])
        XCTAssertEqual(e.parameterCount, 256 * 28 + 256 * 64 + 2 * 256)
        XCTAssertEqual(e.torchModules, ["nn.LSTM(28, 64, batch_first=True)"])
        XCTAssertEqual(e.torchModuleCount, 1)
        XCTAssertEqual(e.macsPerSample, 256 * (28 * 28 + 27 * 64))

        let p = FloatBuffer(e.parameterCount), g = FloatBuffer(e.parameterCount)
        e.bind(parameters: p.pointer, gradients: g.pointer)
        var rng = SplitMix64(seed: 9)
        e.initialize(.torch, rng: &rng)
        Compare.allFinite("torch init", p.array)
        let tb = 1 / Float(64).squareRoot()
        let nih = 256 * 28, nhh = 256 * 64
        let parts = [0..<nih, nih..<(nih + nhh), (nih + nhh)..<(nih + nhh + 256), (nih + nhh + 256)..<p.count]
        for (k, range) in parts.enumerated() {
            let v = p.array[range].map { abs($0) }
            XCTAssertLessThanOrEqual(v.max()!, tb, "torch part \(k)")
            XCTAssertGreaterThan(v.max()!, 0.9 * tb, "torch part \(k)")
        }
        e.initialize(.glorot, rng: &rng)
        Compare.allFinite("glorot init", p.array)
        let li = (6 / Float(28 + 256)).squareRoot(), lh = (6 / Float(64 + 256)).squareRoot()
        for (range, limit) in [(parts[0], li), (parts[1], lh)] {
            let v = p.array[range].map { abs($0) }
            XCTAssertLessThanOrEqual(v.max()!, limit)
            XCTAssertGreaterThan(v.max()!, 0.9 * limit)
        }
        // Biases: zero but the forget gate's b_ih (rows H..<2H), which is 1 (Keras unit_forget_bias).
        let biases = Array(p.array[(nih + nhh)...])
        XCTAssertEqual(biases.count, 512)
        XCTAssertTrue(biases.enumerated().allSatisfy { $0.element == ((64..<128).contains($0.offset) ? 1 : 0) }, "glorot biases")
    }

    func testLSTMDecoderMetadataAndInit() {
        let d = LSTMDecoder(code: 16, steps: 28, features: 28, hidden: 64)
        XCTAssertEqual(d.inputSize, 16)
        XCTAssertEqual(d.outputSize, 28 * 28)
        XCTAssertEqual(d.parameterShapes.map(\.name),
                       ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "proj.weight", "proj.bias"])
        XCTAssertEqual(d.parameterShapes.map(\.shape), [[256, 16], [256, 64], [256], [256], [28, 64], [28]])
        XCTAssertEqual(d.parameterCount, 256 * 16 + 256 * 64 + 2 * 256 + 28 * 64 + 28)
        XCTAssertEqual(d.torchModules, ["nn.LSTM(16, 64, batch_first=True)", "nn.Linear(64, 28)"])
        XCTAssertEqual(d.torchModuleCount, 2)
        XCTAssertEqual(d.macsPerSample, 256 * (16 + 27 * 64) + 28 * 64 * 28)

        let p = FloatBuffer(d.parameterCount), g = FloatBuffer(d.parameterCount)
        d.bind(parameters: p.pointer, gradients: g.pointer)
        var rng = SplitMix64(seed: 11)
        d.initialize(.torch, rng: &rng)
        Compare.allFinite("torch init", p.array)
        let tb = 1 / Float(64).squareRoot()
        let lstm = 256 * 16 + 256 * 64 + 2 * 256, nwp = 28 * 64
        for (k, range) in [0..<lstm, lstm..<(lstm + nwp), (lstm + nwp)..<p.count].enumerated() {
            let v = p.array[range].map { abs($0) }
            XCTAssertLessThanOrEqual(v.max()!, tb, "torch part \(k)")
            XCTAssertGreaterThan(v.max()!, 0.8 * tb, "torch part \(k)")
        }
        d.initialize(.glorot, rng: &rng)
        Compare.allFinite("glorot init", p.array)
        let lp = (6 / Float(64 + 28)).squareRoot()
        let v = p.array[lstm..<(lstm + nwp)].map { abs($0) }
        XCTAssertLessThanOrEqual(v.max()!, lp)
        XCTAssertGreaterThan(v.max()!, 0.9 * lp)
        XCTAssertTrue(Array(p.array[(lstm - 512)..<lstm]).enumerated().allSatisfy {
            $0.element == ((64..<128).contains($0.offset) ? 1 : 0)
        }, "glorot LSTM biases: forget gate b_ih = 1, the rest 0")
        XCTAssertTrue(p.array[(lstm + nwp)...].allSatisfy { $0 == 0 }, "glorot proj bias")
    }
}
