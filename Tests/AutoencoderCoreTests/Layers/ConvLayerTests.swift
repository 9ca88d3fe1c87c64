import XCTest
import TestSupport
@testable import AutoencoderCore

final class ConvLayerTests: XCTestCase {
    // MARK: Gradient checks

    /// (in, out, kernel, h, w): fewer than 16 output channels take the matmul lowering (out > in,
    /// out == in, out < in, out == 1), 16 or more oneDNN's direct convolution; kernels 3 and 5;
    /// non-square images.
    static let shapes: [(Int, Int, Int, Int, Int)] = [
        (1, 3, 3, 6, 6), (2, 3, 3, 6, 5), (3, 2, 3, 6, 6), (3, 1, 3, 5, 6),
        (2, 2, 5, 6, 6), (3, 2, 5, 6, 7), (1, 2, 5, 5, 5), (2, 1, 5, 6, 6),
        (1, 16, 3, 6, 6), (3, 16, 3, 5, 6), (16, 16, 3, 6, 5), (16, 32, 5, 5, 6), (32, 1, 3, 6, 6), (16, 3, 3, 5, 5),
    ]

    func testConv2DGradientsIdentityAndSigmoid() {
        for (i, (cin, cout, k, h, w)) in Self.shapes.enumerated() {
            for act in [Activation.identity, .sigmoid] {
                let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: h, width: w,
                                   activation: act)
                checkLayerGradients(layer, batch: 2 + i % 2, seed: UInt64(20 + i), maxChecks: 150)
            }
        }
    }

    /// The formats the model may put between spatial layers: the layer's x/dx and y/dy in NHWC or
    /// blocked (16 channels innermost); both convolution paths. The check treats x and y as flat
    /// vectors, so any consistent layout must pass; `testConv2DForwardEveryFormat` checks the
    /// values are the convolution's.
    func testConv2DGradientsEveryMemoryFormat() {
        for (i, (cin, cout)) in [(16, 16), (16, 32), (1, 16), (16, 1), (16, 3), (32, 2)].enumerated() {
            for fin in Self.layouts(channels: cin) {
                for fout in Self.layouts(channels: cout) where cout >= 16 || fout == .nchw {
                    let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: 3, height: 5, width: 6, activation: .sigmoid)
                    layer.inputFormat = TensorFormat(layout: fin, type: .f32)
                    layer.outputFormat = TensorFormat(layout: fout, type: .f32)
                    checkLayerGradients(layer, batch: 2, seed: UInt64(80 + i), maxChecks: 100)
                }
            }
        }
    }

    static func layouts(channels c: Int) -> [TensorFormat.Layout] {
        c % 16 == 0 ? [.nchw, .nhwc, .blocked16] : [.nchw, .nhwc]
    }

    func testConv2DGradientsReLU() {
        // Every weight feeds every output position, so a step can cross a ReLU kink: those
        // coordinates are left out (kinks: true), the others must agree to 1e-3.
        // (3, 16, 3) runs oneDNN's direct convolution, the others the matmul lowering; its loss
        // sums 16 channels, so its f32 rounding noise needs a larger step, 3e-3 (the layer is
        // piecewise linear, so away from kinks the step adds no truncation error).
        for (i, (cin, cout, k)) in [(2, 3, 3), (3, 2, 3), (2, 2, 5), (3, 16, 3)].enumerated() {
            let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: 6, width: 6,
                               activation: .relu)
            checkLayerGradients(layer, batch: 2, seed: UInt64(40 + i), h: cout >= 16 ? 3e-3 : 1e-3, rtol: 1e-3, atol: 1e-4,
                                kinks: true, maxChecks: 150)
        }
    }

    func testConv2DWithoutInputGradient() {
        // The model's first layer: no backward-data primitive; weight gradients as with one.
        for (cin, cout) in [(1, 16), (2, 1), (16, 1)] {
            let a = Conv2D(inChannels: cin, outChannels: cout, kernel: 3, height: 6, width: 6, activation: .relu)
            let b = Conv2D(inChannels: cin, outChannels: cout, kernel: 3, height: 6, width: 6, activation: .relu)
            b.needsInputGradient = false
            let p = FloatBuffer(a.parameterCount), ga = FloatBuffer(a.parameterCount), gb = FloatBuffer(a.parameterCount)
            var rng = SplitMix64(seed: 9)
            a.bind(parameters: p.pointer, gradients: ga.pointer)
            a.initialize(.torch, rng: &rng)
            b.bind(parameters: p.pointer, gradients: gb.pointer)
            for l in [a, b] { l.reserve(maxBatch: 3) }
            let x = FloatBuffer(3 * a.inputSize), y = FloatBuffer(3 * a.outputSize), dy = FloatBuffer(3 * a.outputSize)
            for (i, v) in GradCheck.random(x.count, seed: 10).enumerated() { x[i] = v }
            let r = GradCheck.random(dy.count, seed: 11)
            let dx = FloatBuffer(x.count)
            for (l, dxp) in [(a, Optional(dx.pointer)), (b, nil)] {
                l.forward(x.pointer, y.pointer, batch: 3)
                for i in 0..<r.count { dy[i] = r[i] }
                l.backward(x: x.pointer, y: y.pointer, dy: dy.pointer, dx: dxp, batch: 3)
            }
            XCTAssertEqual(ga.array, gb.array, "\(cin)->\(cout)")
            XCTAssertTrue(ga.array.contains { $0 != 0 })
        }
    }

    func testMaxPool2DGradients() {
        // A wide input range keeps the 2×2 maxima well separated relative to h.
        checkLayerGradients(MaxPool2D(channels: 3, height: 6, width: 6), batch: 3, seed: 60, h: 1e-3,
                            inputRange: (-10, 10))
    }

    func testUpsample2DGradients() {
        checkLayerGradients(Upsample2D(channels: 3, height: 3, width: 4), batch: 3, seed: 70)
    }

    func testPoolingAndUpsamplingEveryMemoryFormat() {
        // 16 channels: NCHW (oneDNN's kernels then work in blocked layout, reordering), NHWC and
        // blocked in, any of them out.
        for fin in Self.layouts(channels: 16) {
            for fout in Self.layouts(channels: 16) {
                let pool = MaxPool2D(channels: 16, height: 4, width: 6)
                pool.inputFormat = TensorFormat(layout: fin, type: .f32)
                pool.outputFormat = TensorFormat(layout: fout, type: .f32)
                checkLayerGradients(pool, batch: 2, seed: 61, h: 1e-3, inputRange: (-10, 10), maxChecks: 200)
                let up = Upsample2D(channels: 16, height: 3, width: 2)
                up.inputFormat = TensorFormat(layout: fin, type: .f32)
                up.outputFormat = TensorFormat(layout: fout, type: .f32)
                checkLayerGradients(up, batch: 2, seed: 71, maxChecks: 200)
            }
        }
    }

    // MARK: Forward against naive references

    /// Direct 7-loop "same" convolution in Double.
    static func naiveConv(x: [Float], w: [Float], b: [Float], batch: Int, cin: Int, cout: Int,
                           k: Int, h: Int, wd: Int) -> [Float] {
        let pad = k / 2
        var y = [Float](repeating: 0, count: batch * cout * h * wd)
        for n in 0..<batch {
            for o in 0..<cout {
                for i in 0..<h {
                    for j in 0..<wd {
                        var acc = Double(b[o])
                        for c in 0..<cin {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let yy = i + ky - pad, xx = j + kx - pad
                                    guard yy >= 0, yy < h, xx >= 0, xx < wd else { continue }
                                    acc += Double(w[((o * cin + c) * k + ky) * k + kx])
                                        * Double(x[((n * cin + c) * h + yy) * wd + xx])
                                }
                            }
                        }
                        y[((n * cout + o) * h + i) * wd + j] = Float(acc)
                    }
                }
            }
        }
        return y
    }

    func testConv2DForwardMatchesNaive() {
        // (in, out, kernel, h, w): both paths (out < 16: matmul lowering; out >= 16: direct).
        let cases: [(Int, Int, Int, Int, Int)] = [
            (1, 4, 3, 8, 7), (3, 5, 3, 7, 7), (4, 2, 3, 6, 8), (5, 1, 3, 9, 6),
            (2, 3, 5, 7, 6), (3, 1, 5, 6, 6), (4, 4, 1, 5, 5),
            // Kernel wider than the image: some taps never touch it.
            (2, 3, 5, 2, 3), (3, 2, 7, 3, 2),
            (1, 16, 3, 8, 7), (16, 16, 3, 7, 6), (16, 32, 5, 6, 6), (32, 1, 3, 7, 7), (16, 16, 7, 3, 2),
        ]
        for (t, (cin, cout, k, h, wd)) in cases.enumerated() {
            let batch = 3
            let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: h, width: wd, activation: .identity)
            let (buffers, wv, bv, xv) = Self.setUp(layer, seed: UInt64(100 + t), batch: batch)
            let y = FloatBuffer(batch * layer.outputSize)
            withExtendedLifetime(buffers) {
                xv.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: batch) }
            }
            let ref = Self.naiveConv(x: xv, w: wv, b: bv, batch: batch, cin: cin, cout: cout, k: k, h: h, wd: wd)
            Compare.close("case \(t): conv vs naive", y.array, ref, atol: 1e-4)
        }
    }

    /// Forward in every memory format the model uses, converted back to NCHW, equals the naive
    /// convolution (so the formats are what the layer says they are).
    func testConv2DForwardEveryFormat() {
        for (t, (cin, cout)) in [(16, 16), (1, 16), (16, 1), (32, 3)].enumerated() {
            for fin in Self.layouts(channels: cin) {
                for fout in Self.layouts(channels: cout) where cout >= 16 || fout == .nchw {
                    let (h, wd, batch) = (5, 6, 2)
                    let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: 3, height: h, width: wd, activation: .identity)
                    layer.inputFormat = TensorFormat(layout: fin, type: .f32)
                    layer.outputFormat = TensorFormat(layout: fout, type: .f32)
                    let (buffers, wv, bv, xv) = Self.setUp(layer, seed: UInt64(150 + t), batch: batch)
                    let xin = Layout.fromNCHW(xv, n: batch, c: cin, h: h, w: wd, fin)
                    let y = FloatBuffer(batch * layer.outputSize)
                    withExtendedLifetime(buffers) {
                        xin.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: batch) }
                    }
                    let got = Layout.toNCHW(y.array, n: batch, c: cout, h: h, w: wd, fout)
                    let ref = Self.naiveConv(x: xv, w: wv, b: bv, batch: batch, cin: cin, cout: cout, k: 3, h: h, wd: wd)
                    Compare.close("\(cin)->\(cout) \(fin)->\(fout): conv vs naive", got, ref, atol: 1e-4)
                }
            }
        }
    }

    /// Binds parameters, initialises them (torch scheme) and draws an input: the parameter and
    /// gradient buffers (keep them alive while the layer is used), W, b and x.
    static func setUp(_ layer: Conv2D, seed: UInt64, batch: Int) -> ((FloatBuffer, FloatBuffer), [Float], [Float], [Float]) {
        let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
        layer.bind(parameters: p.pointer, gradients: g.pointer)
        var rng = SplitMix64(seed: seed)
        layer.initialize(.torch, rng: &rng)
        layer.reserve(maxBatch: batch)
        let nw = layer.weightCount
        return ((p, g), Array(p.array[0..<nw]), Array(p.array[nw...]), GradCheck.random(batch * layer.inputSize, seed: seed + 100))
    }

    func testMaxPoolAndUpsampleForward() {
        // One 4×4 channel: pooled maxima and their routing; upsampling repeats each pixel 2×2.
        let pool = MaxPool2D(channels: 1, height: 4, width: 4)
        pool.reserve(maxBatch: 1)
        let x: [Float] = [1, 2, 0, 0,
                          3, 4, 9, 0,
                          -1, -2, 5, 5,
                          -3, -4, 5, 6]
        let y = FloatBuffer(4)
        x.withUnsafeBufferPointer { pool.forward($0.baseAddress!, y.pointer, batch: 1) }
        XCTAssertEqual(y.array, [4, 9, -1, 6])
        let dy = FloatBuffer(4), dx = FloatBuffer(16)
        for i in 0..<4 { dy[i] = Float(i + 1) }
        dx.pointer.update(repeating: 7, count: 16)  // backward must overwrite everything
        x.withUnsafeBufferPointer {
            pool.backward(x: $0.baseAddress!, y: y.pointer, dy: dy.pointer, dx: dx.pointer, batch: 1)
        }
        XCTAssertEqual(dx.array, [0, 0, 0, 0,
                                  0, 1, 2, 0,
                                  3, 0, 0, 0,
                                  0, 0, 0, 4])

        let up = Upsample2D(channels: 1, height: 1, width: 2)
        up.reserve(maxBatch: 1)
        let u = FloatBuffer(8)
        [Float(3), -2].withUnsafeBufferPointer { up.forward($0.baseAddress!, u.pointer, batch: 1) }
        XCTAssertEqual(u.array, [3, 3, -2, -2, 3, 3, -2, -2])

        // Ties: the first maximum in scan order takes the gradient (PyTorch).
        let tie = MaxPool2D(channels: 1, height: 2, width: 4)
        tie.reserve(maxBatch: 1)
        let xt: [Float] = [0, 0, 1, 2,
                           0, 0, 2, 2]
        let yt = FloatBuffer(2), dyt = FloatBuffer(2), dxt = FloatBuffer(8)
        dyt[0] = 5; dyt[1] = 7
        xt.withUnsafeBufferPointer {
            tie.forward($0.baseAddress!, yt.pointer, batch: 1)
            tie.backward(x: $0.baseAddress!, y: yt.pointer, dy: dyt.pointer, dx: dxt.pointer, batch: 1)
        }
        XCTAssertEqual(yt.array, [0, 2])
        XCTAssertEqual(dxt.array, [5, 0, 0, 7,
                                   0, 0, 0, 0])
    }

    // MARK: Batch sizes

    func testSmallerBatchAndEmptyBatch() {
        // A layer reserved for 4 samples run on 2 must give the same per-sample results as on 4,
        // and batch 0 must touch nothing.
        let blockedPool = MaxPool2D(channels: 16, height: 4, width: 4)
        blockedPool.inputFormat = TensorFormat(layout: .blocked16, type: .f32)
        let layers: [Layer] = [
            Conv2D(inChannels: 2, outChannels: 3, kernel: 3, height: 6, width: 6, activation: .relu),
            Conv2D(inChannels: 3, outChannels: 1, kernel: 3, height: 6, width: 6, activation: .sigmoid),
            Conv2D(inChannels: 2, outChannels: 16, kernel: 3, height: 5, width: 6, activation: .tanh),
            MaxPool2D(channels: 2, height: 6, width: 6),
            Upsample2D(channels: 2, height: 3, width: 3),
            blockedPool,
        ]
        for (t, layer) in layers.enumerated() {
            assertHalvesMatchFullBatch(layer, seed: t, yAccuracy: 1e-5, name: "layer \(t)")
        }
    }

    // MARK: Metadata

    func testConv2DMetadataAndInit() {
        let c = Conv2D(inChannels: 32, outChannels: 16, kernel: 5, height: 14, width: 14, activation: .relu)
        XCTAssertEqual(c.inputSize, 32 * 14 * 14)
        XCTAssertEqual(c.outputSize, 16 * 14 * 14)
        XCTAssertEqual(c.parameterShapes.map(\.name), ["weight", "bias"])
        XCTAssertEqual(c.parameterShapes.map(\.shape), [[16, 32, 5, 5], [16]])
        XCTAssertEqual(c.parameterCount, 16 * 32 * 25 + 16)
        XCTAssertEqual(c.macsPerSample, 16 * 14 * 14 * 32 * 25)
        XCTAssertEqual(c.torchModules, ["nn.Conv2d(32, 16, 5, padding=2)", "nn.ReLU()"])
        XCTAssertEqual(c.torchModuleCount, 2)
        let head = Conv2D(inChannels: 32, outChannels: 1, kernel: 3, height: 28, width: 28, activation: .identity)
        XCTAssertEqual(head.torchModules, ["nn.Conv2d(32, 1, 3, padding=1)"])
        XCTAssertEqual(head.torchModuleCount, 1)
        let pool = MaxPool2D(channels: 32, height: 28, width: 28)
        XCTAssertEqual(pool.outputSize, 32 * 14 * 14)
        XCTAssertEqual(pool.torchModules, ["nn.MaxPool2d(2)"])
        XCTAssertEqual(pool.torchModuleCount, 1)
        XCTAssertEqual(pool.parameterCount, 0)
        let up = Upsample2D(channels: 32, height: 7, width: 7)
        XCTAssertEqual(up.outputSize, 32 * 14 * 14)
        XCTAssertEqual(up.torchModules, ["nn.Upsample(scale_factor=2)"])
        XCTAssertEqual(up.torchModuleCount, 1)

        // Init bounds: torch U(±1/sqrt(fan_in)) for weight and bias; glorot U(±sqrt(6/(fan_in+fan_out))), b = 0.
        let p = FloatBuffer(c.parameterCount), g = FloatBuffer(c.parameterCount)
        c.bind(parameters: p.pointer, gradients: g.pointer)
        let nw = 16 * 32 * 25
        var rng = SplitMix64(seed: 9)
        c.initialize(.torch, rng: &rng)
        let tb = 1 / Float(32 * 25).squareRoot()
        XCTAssertTrue(p.array.allSatisfy { abs($0) <= tb })
        XCTAssertGreaterThan(p.array[0..<nw].map { abs($0) }.max()!, 0.9 * tb)
        XCTAssertGreaterThan(p.array[nw...].map { abs($0) }.max()!, 0.5 * tb)
        c.initialize(.glorot, rng: &rng)
        let gl = (6 / Float(32 * 25 + 16 * 25)).squareRoot()
        XCTAssertTrue(p.array[0..<nw].allSatisfy { abs($0) <= gl })
        XCTAssertGreaterThan(p.array[0..<nw].map { abs($0) }.max()!, 0.9 * gl)
        XCTAssertTrue(p.array[nw...].allSatisfy { $0 == 0 })
    }
}

/// NCHW ⇄ the layouts of `TensorFormat` (f32), for tests.
enum Layout {
    static func index(_ n: Int, _ c: Int, _ y: Int, _ x: Int, C: Int, H: Int, W: Int, _ l: TensorFormat.Layout) -> Int {
        switch l {
        case .nchw: return ((n * C + c) * H + y) * W + x
        case .nhwc: return ((n * H + y) * W + x) * C + c
        case .blocked16: return (((n * (C / 16) + c / 16) * H + y) * W + x) * 16 + c % 16
        }
    }

    static func fromNCHW(_ v: [Float], n: Int, c: Int, h: Int, w: Int, _ l: TensorFormat.Layout) -> [Float] {
        var out = [Float](repeating: .nan, count: v.count)
        for a in 0..<n { for b in 0..<c { for y in 0..<h { for x in 0..<w {
            out[index(a, b, y, x, C: c, H: h, W: w, l)] = v[index(a, b, y, x, C: c, H: h, W: w, .nchw)]
        } } } }
        return out
    }

    static func toNCHW(_ v: [Float], n: Int, c: Int, h: Int, w: Int, _ l: TensorFormat.Layout) -> [Float] {
        var out = [Float](repeating: .nan, count: v.count)
        for a in 0..<n { for b in 0..<c { for y in 0..<h { for x in 0..<w {
            out[index(a, b, y, x, C: c, H: h, W: w, .nchw)] = v[index(a, b, y, x, C: c, H: h, W: w, l)]
        } } } }
        return out
    }
}
