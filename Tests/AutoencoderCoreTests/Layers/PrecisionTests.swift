import CKernels
import XCTest
import TestSupport
@testable import AutoencoderCore

/// `--precision bf16`: every matrix product and convolution reads bf16 inputs (x, W, dz rounded to
/// nearest even, 8 significant bits) and accumulates in f32; parameters, gradients and Adam stay f32.
///
/// Tolerances. bf16's unit roundoff is u = 2^-8. A product of two rounded inputs is
/// xW(1+δ1)(1+δ2) with |δ| ≤ u, so a sum Σ_k x_k W_k computed from rounded inputs is off the exact
/// one by at most (2u + u²) Σ|x_k W_k| < 2.01u·Σ|x_k W_k|; f32 accumulation adds at most
/// K·2^-24·Σ|x_k W_k|. Two kinds of checks follow:
/// - "rounding model": the layer against a Double reference fed the *rounded* inputs. Only the f32
///   accumulation differs (tolerance 1e-5·Σ|products|, K ≤ 800 here), so a layer that skipped the
///   rounding (errors ~u·Σ|products|) fails.
/// - "against f32": the bf16 layer against the f32 layer, within 2.01u·Σ|products| (+ the f32
///   slack); activations are 1-Lipschitz, so the bound holds after them too.
final class PrecisionTests: XCTestCase {
    static let u = Double(1.0 / 256.0)

    /// Round to nearest even bf16 (finite values), written independently of the C kernels.
    static func bf(_ x: Float) -> Float {
        let b = x.bitPattern
        return Float(bitPattern: (b &+ 0x7fff &+ ((b >> 16) & 1)) & 0xffff_0000)
    }

    func testRoundingHelperMatchesKernels() {
        let xs: [Float] = GradCheck.random(1000, seed: 3, -100, 100) + [0, -0, 1, 1.00390625, 1.005859375, 3e-39, 65504, 1e30]
        let low = BF16Buffer(xs.count)
        xs.withUnsafeBufferPointer { aet_f32_to_bf16($0.baseAddress!, low.pointer, xs.count) }
        XCTAssertEqual(low.floats, xs.map(Self.bf))
        // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
        XCTAssertEqual(Self.bf(1.00390625), 1)
        XCTAssertEqual(Self.bf(1.01171875), 1.015625)
    }

    // MARK: Dense

    struct DenseCase {
        let layer: Dense
        let p: FloatBuffer, g: FloatBuffer, x: FloatBuffer, y: FloatBuffer, dy: FloatBuffer, dx: FloatBuffer
    }

    /// A Dense layer bound to fresh buffers (torch init, scaled), x and dy drawn from seeds.
    func dense(_ k: Int, _ o: Int, _ act: Activation, _ precision: Precision, n: Int, seed: UInt64) -> DenseCase {
        let layer = Dense(k, o, activation: act)
        layer.precision = precision
        let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
        layer.bind(parameters: p.pointer, gradients: g.pointer)
        var rng = SplitMix64(seed: seed)
        layer.initialize(.torch, rng: &rng)
        for i in 0..<p.count { p[i] *= 3 }
        layer.reserve(maxBatch: n)
        let x = FloatBuffer(n * k), y = FloatBuffer(n * o), dy = FloatBuffer(n * o), dx = FloatBuffer(n * k)
        for (i, v) in GradCheck.random(x.count, seed: seed + 1).enumerated() { x[i] = v }
        return DenseCase(layer: layer, p: p, g: g, x: x, y: y, dy: dy, dx: dx)
    }

    func run(_ c: DenseCase, n: Int, dySeed: UInt64) {
        c.layer.forward(c.x.pointer, c.y.pointer, batch: n)
        for (i, v) in GradCheck.random(c.dy.count, seed: dySeed).enumerated() { c.dy[i] = v }
        c.layer.backward(x: c.x.pointer, y: c.y.pointer, dy: c.dy.pointer, dx: c.dx.pointer, batch: n)
    }

    func testDenseBF16IsTheProductOfRoundedInputs() {
        let (k, o, n) = (300, 37, 5)
        let c = dense(k, o, .identity, .bf16, n: n, seed: 7)
        let W = c.p.array, x = c.x.array
        run(c, n: n, dySeed: 9)
        let dy = GradCheck.random(n * o, seed: 9)
        let bf = Self.bf
        func check(_ name: String, _ got: Float, _ ref: Double, _ mag: Double) {
            XCTAssertLessThanOrEqual(abs(Double(got) - ref), 1e-5 * mag + 1e-7, "\(name): \(got) vs \(ref)")
        }
        for r in 0..<n {
            for j in 0..<o {
                var s = Double(W[k * o + j]), m = abs(s)
                for q in 0..<k {
                    let t = Double(bf(x[r * k + q])) * Double(bf(W[j * k + q]))
                    s += t; m += abs(t)
                }
                check("y[\(r), \(j)]", c.y[r * o + j], s, m)
            }
        }
        for j in 0..<o {
            for q in 0..<k {
                var s = 0.0, m = 0.0
                for r in 0..<n {
                    let t = Double(bf(dy[r * o + j])) * Double(bf(x[r * k + q]))
                    s += t; m += abs(t)
                }
                check("dW[\(j), \(q)]", c.g[j * k + q], s, m)
            }
            let db = (0..<n).reduce(0.0) { $0 + Double(dy[$1 * o + j]) }
            check("db[\(j)]", c.g[k * o + j], db, (0..<n).reduce(0.0) { $0 + abs(Double(dy[$1 * o + j])) })
        }
        for r in 0..<n {
            for q in 0..<k {
                var s = 0.0, m = 0.0
                for j in 0..<o {
                    let t = Double(bf(dy[r * o + j])) * Double(bf(W[j * k + q]))
                    s += t; m += abs(t)
                }
                check("dx[\(r), \(q)]", c.dx[r * k + q], s, m)
            }
        }
    }

    func testDenseBF16AgreesWithF32EveryActivation() {
        let (k, o, n) = (200, 24, 6)
        for act in Activation.allCases {
            let a = dense(k, o, act, .f32, n: n, seed: 11), b = dense(k, o, act, .bf16, n: n, seed: 11)
            a.layer.forward(a.x.pointer, a.y.pointer, batch: n)
            b.layer.forward(b.x.pointer, b.y.pointer, batch: n)
            let W = a.p.array, x = a.x.array
            var bound = [Double](repeating: 0, count: n * o)
            for r in 0..<n {
                for j in 0..<o {
                    var m = 0.0
                    for q in 0..<k { m += abs(Double(x[r * k + q]) * Double(W[j * k + q])) }
                    bound[r * o + j] = 2.01 * Self.u * m + 1e-5 * m + 1e-7
                }
            }
            Compare.elementwise("\(act): bf16 forward vs f32", b.y.array.map(Double.init), a.y.array.map(Double.init),
                                tolerance: { i, _, _ in bound[i] })
            XCTAssertNotEqual(a.y.array, b.y.array, "\(act): bf16 gave exactly the f32 result")
        }
    }

    // MARK: Conv2D

    /// Naive "same" convolution, its weight gradient and input gradient, in Double, after `r`
    /// (rounding) is applied to every product's inputs; `abs` sums |products| instead.
    static func conv(_ x: [Float], _ w: [Float], n: Int, cin: Int, cout: Int, k: Int, h: Int, wd: Int,
                     r: (Float) -> Float, abs absolute: Bool = false) -> [Double] {
        let pad = k / 2
        var y = [Double](repeating: 0, count: n * cout * h * wd)
        for s in 0..<n { for o in 0..<cout { for i in 0..<h { for j in 0..<wd {
            var acc = 0.0
            for c in 0..<cin { for ky in 0..<k { for kx in 0..<k {
                let yy = i + ky - pad, xx = j + kx - pad
                guard yy >= 0, yy < h, xx >= 0, xx < wd else { continue }
                let t = Double(r(w[((o * cin + c) * k + ky) * k + kx])) * Double(r(x[((s * cin + c) * h + yy) * wd + xx]))
                acc += absolute ? Swift.abs(t) : t
            } } }
            y[((s * cout + o) * h + i) * wd + j] = acc
        } } } }
        return y
    }

    static func convWeightGrad(_ x: [Float], _ dz: [Float], n: Int, cin: Int, cout: Int, k: Int, h: Int, wd: Int,
                               r: (Float) -> Float, abs absolute: Bool = false) -> [Double] {
        let pad = k / 2
        var g = [Double](repeating: 0, count: cout * cin * k * k)
        for o in 0..<cout { for c in 0..<cin { for ky in 0..<k { for kx in 0..<k {
            var acc = 0.0
            for s in 0..<n { for i in 0..<h { for j in 0..<wd {
                let yy = i + ky - pad, xx = j + kx - pad
                guard yy >= 0, yy < h, xx >= 0, xx < wd else { continue }
                let t = Double(r(dz[((s * cout + o) * h + i) * wd + j])) * Double(r(x[((s * cin + c) * h + yy) * wd + xx]))
                acc += absolute ? Swift.abs(t) : t
            } } }
            g[((o * cin + c) * k + ky) * k + kx] = acc
        } } } }
        return g
    }

    static func convInputGrad(_ w: [Float], _ dz: [Float], n: Int, cin: Int, cout: Int, k: Int, h: Int, wd: Int,
                              r: (Float) -> Float, abs absolute: Bool = false) -> [Double] {
        let pad = k / 2
        var dx = [Double](repeating: 0, count: n * cin * h * wd)
        for s in 0..<n { for o in 0..<cout { for i in 0..<h { for j in 0..<wd {
            let d = Double(r(dz[((s * cout + o) * h + i) * wd + j]))
            for c in 0..<cin { for ky in 0..<k { for kx in 0..<k {
                let yy = i + ky - pad, xx = j + kx - pad
                guard yy >= 0, yy < h, xx >= 0, xx < wd else { continue }
                let t = d * Double(r(w[((o * cin + c) * k + ky) * k + kx]))
                dx[((s * cin + c) * h + yy) * wd + xx] += absolute ? Swift.abs(t) : t
            } } }
        } } } }
        return dx
    }

    func testConv2DBF16IsTheProductOfRoundedInputs() {
        // Matmul lowering (out < 16) and direct convolution (out >= 16), NCHW f32 in and out.
        for (t, (cin, cout)) in [(3, 1), (2, 3), (16, 16), (1, 16), (32, 2)].enumerated() {
            let (n, h, wd, k) = (2, 5, 6, 3)
            let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: h, width: wd, activation: .identity)
            layer.precision = .bf16
            let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
            layer.bind(parameters: p.pointer, gradients: g.pointer)
            var rng = SplitMix64(seed: UInt64(40 + t))
            layer.initialize(.torch, rng: &rng)
            layer.reserve(maxBatch: n)
            let xv = GradCheck.random(n * layer.inputSize, seed: UInt64(50 + t))
            let dzv = GradCheck.random(n * layer.outputSize, seed: UInt64(60 + t))
            let y = FloatBuffer(n * layer.outputSize), dy = FloatBuffer(n * layer.outputSize), dx = FloatBuffer(n * layer.inputSize)
            for (i, v) in dzv.enumerated() { dy[i] = v }
            xv.withUnsafeBufferPointer {
                layer.forward($0.baseAddress!, y.pointer, batch: n)
                layer.backward(x: $0.baseAddress!, y: y.pointer, dy: dy.pointer, dx: dx.pointer, batch: n)
            }
            let nw = layer.weightCount
            let wv = Array(p.array[0..<nw]), bv = Array(p.array[nw...])
            let bf = Self.bf, id: (Float) -> Float = { $0 }
            func compare(_ name: String, _ got: [Float], _ ref: [Double], _ mag: [Double]) {
                Compare.elementwise("\(cin)->\(cout) \(name) vs the rounded-input product", got.map(Double.init), ref,
                                    tolerance: { i, _, _ in 1e-5 * mag[i] + 1e-7 })
            }
            var yRef = Self.conv(xv, wv, n: n, cin: cin, cout: cout, k: k, h: h, wd: wd, r: bf)
            let yMag = Self.conv(xv, wv, n: n, cin: cin, cout: cout, k: k, h: h, wd: wd, r: bf, abs: true)
            for i in 0..<yRef.count { yRef[i] += Double(bv[(i / (h * wd)) % cout]) }
            compare("y", y.array, yRef, yMag.map { $0 + 1 })
            compare("dW", Array(g.array[0..<nw]), Self.convWeightGrad(xv, dzv, n: n, cin: cin, cout: cout, k: k, h: h, wd: wd, r: bf),
                    Self.convWeightGrad(xv, dzv, n: n, cin: cin, cout: cout, k: k, h: h, wd: wd, r: bf, abs: true))
            compare("dx", dx.array, Self.convInputGrad(wv, dzv, n: n, cin: cin, cout: cout, k: k, h: h, wd: wd, r: bf),
                    Self.convInputGrad(wv, dzv, n: n, cin: cin, cout: cout, k: k, h: h, wd: wd, r: bf, abs: true))
            // db = Σ dz, from dz or its bf16 rounding: within u·Σ|dz|.
            for o in 0..<cout {
                var s = 0.0, m = 0.0
                for si in 0..<n { for q in 0..<(h * wd) { let v = Double(id(dzv[(si * cout + o) * h * wd + q])); s += v; m += abs(v) } }
                XCTAssertEqual(Double(g[nw + o]), s, accuracy: Self.u * m + 1e-6, "\(cin)->\(cout) db[\(o)]")
            }
        }
    }

    // MARK: LSTM

    /// With one step there is no recurrence: h = o·tanh(i·g) from z = bf(x)·bf(W_ih)ᵀ + b exactly.
    func testLSTMBF16OneStepIsTheProductOfRoundedInputs() {
        let (F, H, n) = (28, 16, 3)
        let layer = LSTMEncoder(steps: 1, features: F, hidden: H)
        layer.precision = .bf16
        let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
        layer.bind(parameters: p.pointer, gradients: g.pointer)
        var rng = SplitMix64(seed: 5)
        layer.initialize(.torch, rng: &rng)
        for i in 0..<p.count { p[i] *= 4 }
        layer.reserve(maxBatch: n)
        let xv = GradCheck.random(n * F, seed: 6, -2, 2)
        let y = FloatBuffer(n * H)
        xv.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: n) }
        let W = p.array, bih = 4 * H * (F + H), bhh = bih + 4 * H
        func sig(_ v: Double) -> Double { 1 / (1 + exp(-v)) }
        var ref = [Double](repeating: .nan, count: n * H)
        for s in 0..<n {
            for j in 0..<H {
                func z(_ gate: Int) -> Double {
                    let row = gate * H + j
                    var acc = Double(W[bih + row]) + Double(W[bhh + row])
                    for q in 0..<F { acc += Double(Self.bf(W[row * F + q])) * Double(Self.bf(xv[s * F + q])) }
                    return acc
                }
                let h = sig(z(3)) * tanh(sig(z(0)) * tanh(z(2)))
                ref[s * H + j] = h
            }
        }
        Compare.close("bf16 LSTM step vs the rounded-input reference", y.array.map(Double.init), ref, atol: 2e-6)
    }

    /// Over T steps each step rounds x (or the code), h_{t-1}, the weights (≤ 2u relative on each
    /// pre-activation) and, backwards, dz (u); the gates are 1-Lipschitz, so the relative error
    /// grows at most additively per step: normwise ≤ 4u·T for outputs and gradients.
    func testLSTMBF16AgreesWithF32() {
        let T = 5
        let makers: [() -> Layer] = [{ LSTMEncoder(steps: T, features: 6, hidden: 10) },
                                     { LSTMDecoder(code: 4, steps: T, features: 5, hidden: 9) }]
        for (t, make) in makers.enumerated() {
            var out: [[Float]] = []
            for precision in [Precision.f32, .bf16] {
                let layer = make()
                layer.precision = precision
                let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
                layer.bind(parameters: p.pointer, gradients: g.pointer)
                var rng = SplitMix64(seed: UInt64(70 + t))
                layer.initialize(.torch, rng: &rng)
                for i in 0..<p.count { p[i] *= 2 }
                layer.reserve(maxBatch: 4)
                let x = FloatBuffer(4 * layer.inputSize), y = FloatBuffer(4 * layer.outputSize)
                let dy = FloatBuffer(4 * layer.outputSize), dx = FloatBuffer(4 * layer.inputSize)
                for (i, v) in GradCheck.random(x.count, seed: UInt64(80 + t)).enumerated() { x[i] = v }
                for (i, v) in GradCheck.random(dy.count, seed: UInt64(90 + t)).enumerated() { dy[i] = v }
                layer.forward(x.pointer, y.pointer, batch: 4)
                let y0 = y.array
                layer.backward(x: x.pointer, y: y.pointer, dy: dy.pointer, dx: dx.pointer, batch: 4)
                out.append(y0 + g.array + dx.array)
            }
            let a = out[0], b = out[1]
            XCTAssertEqual(a.count, b.count)
            let diff = zip(a, b).reduce(0.0) { $0 + pow(Double($1.0 - $1.1), 2) }.squareRoot()
            let norm = a.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertFalse(diff.isNaN)
            XCTAssertLessThanOrEqual(diff / norm, 4 * Self.u * Double(T), "layer \(t): bf16 vs f32 relative difference \(diff / norm)")
            XCTAssertGreaterThan(diff, 0, "layer \(t): bf16 gave exactly the f32 result")
        }
    }

    // MARK: Models

    /// Whole models (an MLP, the conv preset's layers with bf16 pooling/upsampling and blocked and
    /// NHWC boundaries, the LSTM preset): bf16 gradients against f32, normwise. Depth L adds up
    /// the per-layer bound (≈ 4u per layer, forward and backward) — ≤ 4u·L.
    func testModelsBF16GradientsAgreeWithF32() throws {
        for (name, layers) in [("mlp3", 8), ("conv", 9), ("lstm", 10)] {
            var grads: [[Float]] = []
            var losses: [Double] = []
            for precision in [Precision.f32, .bf16] {
                let m = try Autoencoder(spec: ModelSpec.preset(name)!, objective: Objective(), maxBatch: 8, precision: precision)
                m.initialize(ModelSpec.preset(name)!.defaultInit, seed: 3)
                var rng = SplitMix64(seed: 4)
                for i in 0..<(8 * m.inputDim) { m.target[i] = rng.nextFloat() }
                m.corrupted = false
                m.prepareGrads(8)
                m.forward(8, noise: nil)
                losses.append(m.backward(8, globalCount: 8, batchTerms: true).loss)
                grads.append(Array(m.grads.array[0..<m.parameterCount]))
            }
            XCTAssertEqual(grads[0].count, grads[1].count, name)
            let diff = zip(grads[0], grads[1]).reduce(0.0) { $0 + pow(Double($1.0 - $1.1), 2) }.squareRoot()
            let norm = grads[0].reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertGreaterThan(norm, 0, name)
            XCTAssertLessThanOrEqual(diff / norm, 4 * Self.u * Double(layers), "\(name): bf16 gradient off f32 by \(diff / norm) (normwise)")
            XCTAssertGreaterThan(diff, 0, "\(name): bf16 gave exactly the f32 gradient")
            XCTAssertEqual(losses[1], losses[0], accuracy: 4 * Self.u * Double(layers) * abs(losses[0]), name)
        }
    }

    /// Adam updates the f32 master weights: a step of lr = 1e-6 moves every parameter by about
    /// lr (Adam's first step is lr·g/(|g| + 1e-8), within 1 % of lr for |g| > 1e-6), far below bf16's resolution near these weights
    /// (2^-8·|w| ≈ 1e-4), and the moments hold the f32 gradient.
    func testBF16TrainingUpdatesF32MasterWeights() throws {
        var cfg = AdamConfig()
        cfg.lr = 1e-6
        let m = try Autoencoder(spec: ModelSpec.preset("mlp3")!, objective: Objective(), maxBatch: 16, precision: .bf16)
        m.initialize(.torch, seed: 1)
        var rng = SplitMix64(seed: 2)
        for i in 0..<(16 * m.inputDim) { m.target[i] = rng.nextFloat() }
        m.prepareGrads(16)
        m.forward(16, noise: nil)
        _ = m.backward(16, globalCount: 16, batchTerms: true)
        let P = m.parameterCount
        let before = m.params.array, g = m.grads.array
        let adam = Adam(count: P, config: cfg)
        XCTAssertTrue(adam.update(params: m.params.pointer, grads: m.grads.pointer))
        var moved = 0, considered = 0
        for i in 0..<P where abs(g[i]) > 1e-6 && abs(before[i]) > 1e-2 {
            considered += 1
            let d = abs(Double(m.params[i]) - Double(before[i]))
            if d > 0.5e-6 && d < 1.5e-6 { moved += 1 }
            XCTAssertEqual(adam.m[i], 0.1 * g[i], accuracy: 1e-6 * abs(g[i]))
        }
        XCTAssertGreaterThan(considered, P / 10)
        XCTAssertEqual(moved, considered, "parameters not moved by ≈ lr: the master weights are not f32")
        // And the parameters are not bf16 values.
        let offGrid = (0..<P).filter { m.params[$0] != Self.bf(m.params[$0]) }.count
        XCTAssertGreaterThan(offGrid, P * 9 / 10)
    }
}
