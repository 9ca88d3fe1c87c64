import XCTest
import TestSupport
@testable import AutoencoderCore

/// Central finite differences: perturb each checked coordinate by ±h, recompute the scalar loss
/// (in Double), and compare (L(+h) − L(−h)) / (the Float step actually taken) with the analytic
/// gradient through `Compare` (fails on NaN, on a missing entry and on !(err <= tol)).
///
/// Tolerances: |analytic − numeric| <= atol + rtol · max(|analytic|, |numeric|). With a Float32
/// forward pass and a good step, central differences agree to about 1e-3 relative (the default);
/// a check that needs more says why where it is called.
enum GradCheck {
    /// Compares `analytic[i]` with the numeric derivative of `loss` at `x[i]` for the indices
    /// in `indices` (all when nil). `analytic` must have exactly `count` entries.
    ///
    /// `pattern` (for piecewise-linear activations): read after each loss evaluation, e.g. which
    /// ReLU outputs are positive. A coordinate whose ±h step changes the pattern straddles a kink,
    /// where a central difference means nothing; it is left out, and at most a quarter of the
    /// coordinates may be left out.
    static func check(_ name: String, x: UnsafeMutablePointer<Float>, count: Int,
                      analytic: [Float], indices: [Int]? = nil, h: Float = 1e-2,
                      rtol: Double = 1e-3, atol: Double = 1e-5, pattern: (() -> [Bool])? = nil,
                      loss: () -> Double, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(analytic.count, count, "\(name): analytic gradient has \(analytic.count) entries, expected \(count)",
                       file: file, line: line)
        var idx: [Int] = []
        var numeric: [Double] = []
        var straddling = 0
        let base: [Bool]? = pattern.map { _ = loss(); return $0() }
        for i in (indices ?? Array(0..<count)) where i < analytic.count {
            var crossed = false
            let d = centralDifference(x, i, h: h) {
                let v = loss()
                if let pattern, pattern() != base! { crossed = true }
                return v
            }
            if crossed { straddling += 1; continue }
            idx.append(i)
            numeric.append(d)
        }
        XCTAssertFalse(idx.isEmpty, "\(name): nothing to check", file: file, line: line)
        XCTAssertLessThanOrEqual(straddling, (idx.count + straddling) / 4,
                                 "\(name): \(straddling) coordinates straddle a kink at h \(h); use a smaller step", file: file, line: line)
        Compare.close("\(name): analytic vs central difference (h \(h)\(straddling > 0 ? ", \(straddling) at a kink left out" : ""))",
                      idx.map { analytic[$0] }, numeric, rtol: rtol, atol: atol, label: { "[\(idx[$0])]" }, file: file, line: line)
    }

    /// (f(p[i] + h) − f(p[i] − h)) / (the Float step actually taken); p[i] is restored.
    static func centralDifference(_ p: UnsafeMutablePointer<Float>, _ i: Int, h: Float, _ f: () -> Double) -> Double {
        let saved = p[i]
        p[i] = saved + h
        let up = f()
        p[i] = saved - h
        let down = f()
        p[i] = saved
        return (up - down) / (Double(saved + h) - Double(saved - h))
    }

    /// Random Float array in [lo, hi).
    static func random(_ n: Int, seed: UInt64, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in g.uniform(lo, hi) }
    }

    /// Double-precision dot product of a layer output with fixed random weights: a generic scalar
    /// loss L = sum(r * y) whose gradient w.r.t. y is r.
    static func dot(_ y: UnsafePointer<Float>, _ r: [Float]) -> Double {
        var s = 0.0
        for i in 0..<r.count { s += Double(y[i]) * Double(r[i]) }
        return s
    }
}

/// Checks a layer's backward against central differences for its input and every parameter,
/// with L = sum(r * layer(x)) for a fixed random r.
func checkLayerGradients(_ layer: Layer, batch: Int, seed: UInt64 = 1, h: Float = 1e-2,
                         rtol: Double = 1e-3, atol: Double = 1e-4, inputRange: (Float, Float) = (-1, 1),
                         kinks: Bool = false, maxChecks: Int = 400, name: String = "", file: StaticString = #filePath, line: UInt = #line) {
    let pc = layer.parameterCount
    let prefix = name.isEmpty ? "" : name + ": "

    let params = FloatBuffer(pc), grads = FloatBuffer(pc)
    layer.bind(parameters: params.pointer, gradients: grads.pointer)
    var rng = SplitMix64(seed: seed)
    layer.initialize(.torch, rng: &rng)
    layer.reserve(maxBatch: batch)
    let xin = FloatBuffer(batch * layer.inputSize)
    let xr = GradCheck.random(xin.count, seed: seed + 1, inputRange.0, inputRange.1)
    for i in 0..<xin.count { xin[i] = xr[i] }
    let y = FloatBuffer(batch * layer.outputSize)
    let r = GradCheck.random(y.count, seed: seed + 2)
    func loss() -> Double {
        layer.forward(xin.pointer, y.pointer, batch: batch)
        return GradCheck.dot(y.pointer, r)
    }
    _ = loss()
    let dy = FloatBuffer(y.count)
    for i in 0..<r.count { dy[i] = r[i] }
    let dx = FloatBuffer(xin.count)
    dx.pointer.update(repeating: .nan, count: dx.count)  // backward must write every dx entry
    grads.zero()
    layer.backward(x: xin.pointer, y: y.pointer, dy: dy.pointer, dx: dx.pointer, batch: batch)
    func pick(_ n: Int) -> [Int] {
        if n <= maxChecks { return Array(0..<n) }
        var g = SplitMix64(seed: seed + 3)
        return (0..<maxChecks).map { _ in Int(g.next() % UInt64(n)) }
    }
    // ReLU / leaky ReLU: the sign pattern of the outputs (both are positive exactly where z > 0).
    let pattern: (() -> [Bool])? = kinks ? { y.array.map { $0 > 0 } } : nil
    GradCheck.check(prefix + "input", x: xin.pointer, count: xin.count, analytic: dx.array, indices: pick(xin.count),
                    h: h, rtol: rtol, atol: atol, pattern: pattern, loss: loss, file: file, line: line)
    if pc > 0 {
        GradCheck.check(prefix + "params", x: params.pointer, count: pc, analytic: grads.array, indices: pick(pc),
                        h: h, rtol: rtol, atol: atol, pattern: pattern, loss: loss, file: file, line: line)
    }
}

/// Runs `python3 ARGS` (stdout and stderr together); status -1 when it cannot start.
func runPython(_ args: [String]) -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3"] + args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return (-1, "\(error)") }
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self))
}

/// A batch of 0 samples must read and write nothing: outputs, input gradients and parameter
/// gradients keep their values.
func assertBatchZeroIsNoOp(_ layer: Layer, x: UnsafePointer<Float>, grads: FloatBuffer, name: String,
                           file: StaticString = #filePath, line: UInt = #line) {
    let no = layer.outputSize, ni = layer.inputSize
    let sentinelY = FloatBuffer(no), sentinelDx = FloatBuffer(ni)
    sentinelY.pointer.update(repeating: 42, count: no)
    sentinelDx.pointer.update(repeating: 42, count: ni)
    let gBefore = grads.array
    layer.forward(x, sentinelY.pointer, batch: 0)
    layer.backward(x: x, y: sentinelY.pointer, dy: sentinelY.pointer, dx: sentinelDx.pointer, batch: 0)
    XCTAssertTrue(sentinelY.array.allSatisfy { $0 == 42 }, "\(name): batch 0 wrote y", file: file, line: line)
    XCTAssertTrue(sentinelDx.array.allSatisfy { $0 == 42 }, "\(name): batch 0 wrote dx", file: file, line: line)
    XCTAssertEqual(grads.array, gBefore, "\(name): batch 0 changed gradients", file: file, line: line)
}

/// Split-batch consistency of one layer: reserved for 4 samples, run on a batch of 4 and on its
/// two halves of 2 (gradients accumulating), it must give the same outputs, input gradients and
/// parameter gradients; backward must overwrite dx, not add to it; a layer with parameters must
/// produce a non-zero gradient; batch 0 must touch nothing. Returns the parameters, the batch-4
/// gradient, the input and the output weights, for further checks.
@discardableResult
func assertHalvesMatchFullBatch(_ layer: Layer, seed t: Int, yAccuracy: Float, name: String,
                                file: StaticString = #filePath, line: UInt = #line)
    -> (params: FloatBuffer, grads: FloatBuffer, x: FloatBuffer, r: [Float]) {
    let pc = layer.parameterCount
    let p = FloatBuffer(pc), g4 = FloatBuffer(pc), g2 = FloatBuffer(pc)
    layer.bind(parameters: p.pointer, gradients: g4.pointer)
    var rng = SplitMix64(seed: UInt64(300 + t))
    layer.initialize(.torch, rng: &rng)
    layer.reserve(maxBatch: 4)
    let ni = layer.inputSize, no = layer.outputSize
    let x = FloatBuffer(4 * ni)
    for (i, v) in GradCheck.random(4 * ni, seed: UInt64(400 + t)).enumerated() { x[i] = v }
    let r = GradCheck.random(4 * no, seed: UInt64(500 + t))

    let y4 = FloatBuffer(4 * no), dy4 = FloatBuffer(4 * no), dx4 = FloatBuffer(4 * ni)
    layer.forward(x.pointer, y4.pointer, batch: 4)
    for i in 0..<(4 * no) { dy4[i] = r[i] }
    layer.backward(x: x.pointer, y: y4.pointer, dy: dy4.pointer, dx: dx4.pointer, batch: 4)
    if pc > 0 { XCTAssertTrue(g4.array.contains { $0 != 0 }, "\(name): no gradient", file: file, line: line) }

    layer.bind(parameters: p.pointer, gradients: g2.pointer)
    let y2 = FloatBuffer(4 * no), dy2 = FloatBuffer(4 * no), dx2 = FloatBuffer(4 * ni)
    dx2.pointer.update(repeating: 7, count: 4 * ni)  // backward must overwrite dx
    for half in 0..<2 {
        let xo = half * 2 * ni, yo = half * 2 * no
        layer.forward(x.pointer + xo, y2.pointer + yo, batch: 2)
        for i in 0..<(2 * no) { dy2[yo + i] = r[yo + i] }
        layer.backward(x: x.pointer + xo, y: y2.pointer + yo, dy: dy2.pointer + yo, dx: dx2.pointer + xo, batch: 2)
    }
    Compare.close("\(name) y", y2.array, y4.array, atol: Double(yAccuracy), file: file, line: line)
    Compare.close("\(name) dx", dx2.array, dx4.array, atol: 1e-5, file: file, line: line)
    Compare.close("\(name) parameter gradient", g2.array, g4.array, atol: 1e-4, file: file, line: line)

    // Batch 0: nothing is read or written.
    assertBatchZeroIsNoOp(layer, x: x.pointer, grads: g2, name: name, file: file, line: line)
    return (p, g4, x, r)
}
