import XCTest
import TestSupport
@testable import AutoencoderCore

final class ConvLayerTests: XCTestCase {
    // MARK: Gradient checks

    func testConv2DGradientsIdentityAndSigmoid() {
        // (in, out, kernel, h, w): out > in, out == in and out < in (with out == 1 and out > 1), so
        // the automatic choice of lowering takes every branch; kernels 3 and 5; non-square images.
        let shapes: [(Int, Int, Int, Int, Int)] = [
            (1, 3, 3, 6, 6), (2, 3, 3, 6, 5), (3, 2, 3, 6, 6), (3, 1, 3, 5, 6),
            (2, 2, 5, 6, 6), (3, 2, 5, 6, 7), (1, 2, 5, 5, 5), (2, 1, 5, 6, 6),
        ]
        for (i, (cin, cout, k, h, w)) in shapes.enumerated() {
            for act in [Activation.identity, .sigmoid] {
                let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: h, width: w,
                                   activation: act)
                checkLayerGradients(layer, batch: 2 + i % 2, seed: UInt64(20 + i), maxChecks: 150)
            }
        }
    }

    func testConv2DGradientsEveryLowering() {
        // Force each GEMM lowering for each pass (the automatic choice depends on the shapes).
        let lowerings: [Conv2D.Lowering] = [.inputSide, .outputSide]
        for (i, (cin, cout, k, h, w)) in [(2, 3, 3, 6, 5), (3, 2, 5, 6, 6), (3, 1, 3, 5, 6), (1, 2, 3, 5, 5)].enumerated() {
            for fwd in lowerings {
                for bwd in lowerings {
                    let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: h, width: w,
                                       activation: .sigmoid)
                    layer.forwardLowering = fwd
                    layer.backwardLowering = bwd
                    checkLayerGradients(layer, batch: 2, seed: UInt64(80 + i), maxChecks: 100)
                }
            }
        }
    }

    func testConv2DGradientsReLU() {
        // Every weight feeds every output position, so a step can cross a ReLU kink: those
        // coordinates are left out (kinks: true), the others must agree to 1e-3.
        for (i, (cin, cout, k)) in [(2, 3, 3), (3, 2, 3), (2, 2, 5)].enumerated() {
            let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: 6, width: 6,
                               activation: .relu)
            checkLayerGradients(layer, batch: 2, seed: UInt64(40 + i), h: 1e-3, rtol: 1e-3, atol: 1e-4,
                                kinks: true, maxChecks: 150)
        }
    }

    func testConv2DChunkingDoesNotChangeGradients() {
        // Force several samples per GEMM chunk and a ragged last chunk (batch 5, chunk 2).
        let saved = Conv2D.targetColumns
        defer { Conv2D.targetColumns = saved }
        Conv2D.targetColumns = 2 * 36
        let lowerings: [Conv2D.Lowering] = [.inputSide, .outputSide]
        for (cin, cout) in [(2, 3), (3, 1)] {
            for fwd in lowerings {
                for bwd in lowerings {
                    let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: 3, height: 6, width: 6,
                                       activation: .sigmoid)
                    layer.forwardLowering = fwd
                    layer.backwardLowering = bwd
                    checkLayerGradients(layer, batch: 5, seed: 50, maxChecks: 100)
                    XCTAssertEqual(layer.chunk, 2)
                }
            }
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

    // MARK: Forward against naive references

    /// Direct 7-loop "same" convolution in Double.
    private func naiveConv(x: [Float], w: [Float], b: [Float], batch: Int, cin: Int, cout: Int,
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
        let saved = Conv2D.targetColumns
        defer { Conv2D.targetColumns = saved }
        // (in, out, kernel, h, w, targetColumns): both lowerings, one and several samples per chunk.
        let cases: [(Int, Int, Int, Int, Int, Int)] = [
            (1, 4, 3, 8, 7, 4096), (3, 5, 3, 7, 7, 1), (4, 2, 3, 6, 8, 4096), (5, 1, 3, 9, 6, 100),
            (2, 3, 5, 7, 6, 4096), (3, 1, 5, 6, 6, 1), (4, 4, 1, 5, 5, 4096),
            // Kernel wider than the image: some taps never touch it.
            (2, 3, 5, 2, 3, 4096), (3, 2, 7, 3, 2, 1),
        ]
        for (t, (cin, cout, k, h, wd, target)) in cases.enumerated() {
            Conv2D.targetColumns = target
            let batch = 3
            for lowering in [Conv2D.Lowering.inputSide, .outputSide] {
                let layer = Conv2D(inChannels: cin, outChannels: cout, kernel: k, height: h, width: wd,
                                   activation: .identity)
                layer.forwardLowering = lowering
                let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
                layer.bind(parameters: p.pointer, gradients: g.pointer)
                var rng = SplitMix64(seed: UInt64(100 + t))
                layer.initialize(.torch, rng: &rng)
                layer.reserve(maxBatch: batch)
                let nw = cout * cin * k * k
                let wv = Array(p.array[0..<nw]), bv = Array(p.array[nw...])
                let xv = GradCheck.random(batch * layer.inputSize, seed: UInt64(200 + t))
                let y = FloatBuffer(batch * layer.outputSize)
                xv.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: batch) }
                let ref = naiveConv(x: xv, w: wv, b: bv, batch: batch, cin: cin, cout: cout, k: k, h: h, wd: wd)
                Compare.close("case \(t) \(lowering): conv vs naive", y.array, ref, atol: 1e-4)
            }
        }
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
        let u = FloatBuffer(8)
        [Float(3), -2].withUnsafeBufferPointer { up.forward($0.baseAddress!, u.pointer, batch: 1) }
        XCTAssertEqual(u.array, [3, 3, -2, -2, 3, 3, -2, -2])
    }

    // MARK: Batch sizes

    func testSmallerBatchAndEmptyBatch() {
        // A layer reserved for 4 samples run on 2 must give the same per-sample results as on 4,
        // and batch 0 must touch nothing.
        let layers: [Layer] = [
            Conv2D(inChannels: 2, outChannels: 3, kernel: 3, height: 6, width: 6, activation: .relu),
            Conv2D(inChannels: 3, outChannels: 1, kernel: 3, height: 6, width: 6, activation: .sigmoid),
            MaxPool2D(channels: 2, height: 6, width: 6),
            Upsample2D(channels: 2, height: 3, width: 3),
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
