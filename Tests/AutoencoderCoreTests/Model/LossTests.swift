import Foundation
import XCTest
@testable import AutoencoderCore

/// LossHead against naive Double formulas (torch.nn.MSELoss / BCELoss / L1Loss on y = σ(z))
/// and against central finite differences w.r.t. the logits.
final class LossTests: XCTestCase {
    static func sigmoid(_ z: Double) -> Double { 1 / (1 + exp(-z)) }

    /// Naive per-element losses in Double on y = σ(z).
    static func naive(_ kind: LossKind, _ z: Float, _ x: Float) -> Double {
        let zd = Double(z), xd = Double(x)
        let y = sigmoid(zd)
        switch kind {
        case .mse: return (y - xd) * (y - xd)
        case .l1: return abs(y - xd)
        case .bce:
            // torch.nn.BCELoss: −[x log y + (1 − x) log(1 − y)]. For moderate z this is exact in
            // Double; the logs are taken as log σ(z) = −log1p(e^−z), log(1 − σ(z)) = −log1p(e^z).
            return -(xd * -log1p(exp(-zd)) + (1 - xd) * -log1p(exp(zd)))
        }
    }

    /// Σ over samples of (mean or sum over pixels) of the naive loss.
    static func naiveSum(_ kind: LossKind, z: [Float], x: [Float], n: Int, d: Int, perImageSum: Bool) -> Double {
        var total = 0.0
        for r in 0..<n {
            var s = 0.0
            for i in 0..<d { s += naive(kind, z[r * d + i], x[r * d + i]) }
            total += perImageSum ? s : s / Double(d)
        }
        return total
    }

    func data(n: Int, d: Int, seed: UInt64, zRange: Float = 3, binaryTargets: Bool = false) -> ([Float], [Float]) {
        let z = GradCheck.random(n * d, seed: seed, -zRange, zRange)
        var x = GradCheck.random(n * d, seed: seed + 100, 0, 1)
        if binaryTargets { x = x.map { $0 < 0.5 ? 0 : 1 } }
        return (z, x)
    }

    func testLossValuesMatchNaive() {
        let n = 3, d = 50
        for kind in LossKind.allCases {
            for perImageSum in [false, true] {
                for binary in [false, true] {
                    let (z, x) = data(n: n, d: d, seed: 7, binaryTargets: binary)
                    var y = [Float](repeating: 0, count: n * d)
                    var dz = [Float](repeating: 0, count: n * d)
                    let got = LossHead.forwardBackward(kind, logits: z, output: &y, target: x, dz: &dz, count: n, dim: d,
                                                       scale: 1, perImageSum: perImageSum)
                    let want = LossTests.naiveSum(kind, z: z, x: x, n: n, d: d, perImageSum: perImageSum)
                    XCTAssertEqual(got, want, accuracy: 1e-5 * max(1, abs(want)), "\(kind) perImageSum=\(perImageSum) binary=\(binary)")
                    for i in 0..<(n * d) {
                        XCTAssertEqual(Double(y[i]), LossTests.sigmoid(Double(z[i])), accuracy: 1e-6, "\(kind) y[\(i)]")
                    }
                    // dz = nil computes the same loss and output.
                    var y2 = [Float](repeating: 0, count: n * d)
                    let got2 = LossHead.forwardBackward(kind, logits: z, output: &y2, target: x, dz: nil, count: n, dim: d,
                                                        scale: 1, perImageSum: perImageSum)
                    XCTAssertEqual(got2, got)
                    XCTAssertEqual(y2, y)
                }
            }
        }
    }

    func testHandComputedValues() {
        // One sample, two pixels; z = 0 → y = 0.5.
        let z: [Float] = [0, 0], x: [Float] = [1, 0]
        var y: [Float] = [0, 0], dz: [Float] = [0, 0]
        let mse = LossHead.forwardBackward(.mse, logits: z, output: &y, target: x, dz: &dz, count: 1, dim: 2, scale: 1)
        XCTAssertEqual(mse, 0.25, accuracy: 1e-7)                  // mean(0.25, 0.25)
        XCTAssertEqual(dz[0], 2 * -0.5 * 0.25 / 2, accuracy: 1e-7)  // 2e·y(1−y)/d
        let bce = LossHead.forwardBackward(.bce, logits: z, output: &y, target: x, dz: &dz, count: 1, dim: 2, scale: 1)
        XCTAssertEqual(bce, log(2), accuracy: 1e-6)
        XCTAssertEqual(dz[0], -0.25, accuracy: 1e-7)                // (y − x)/d
        XCTAssertEqual(dz[1], 0.25, accuracy: 1e-7)
        let l1 = LossHead.forwardBackward(.l1, logits: z, output: &y, target: x, dz: &dz, count: 1, dim: 2, scale: 1)
        XCTAssertEqual(l1, 0.5, accuracy: 1e-7)
        XCTAssertEqual(dz[0], -0.125, accuracy: 1e-7)               // sign(e)·y(1−y)/d
        // scale multiplies the gradient only.
        let bce2 = LossHead.forwardBackward(.bce, logits: z, output: &y, target: x, dz: &dz, count: 1, dim: 2, scale: 0.5)
        XCTAssertEqual(bce2, log(2), accuracy: 1e-6)
        XCTAssertEqual(dz[0], -0.125, accuracy: 1e-7)
    }

    /// Checks the dz LossHead writes (scale s → dz = s·dL/dz) against central differences of the
    /// summed loss, evaluated (a) with the naive Double formula and (b) with LossHead's own sum.
    func checkGradient(_ kind: LossKind, perImageSum: Bool, scale: Float, file: StaticString = #filePath, line: UInt = #line) {
        let n = 3, d = 40
        var (z, x) = data(n: n, d: d, seed: 21)
        if kind == .l1 {
            // Keep |σ(z) − x| ≥ 0.1 so that ±h never crosses the kink.
            for i in 0..<(n * d) {
                let y = Float(LossTests.sigmoid(Double(z[i])))
                if abs(y - x[i]) < 0.1 { x[i] = y > 0.5 ? y - 0.3 : y + 0.3 }
            }
        }
        var y = [Float](repeating: 0, count: n * d)
        var dz = [Float](repeating: 0, count: n * d)
        _ = LossHead.forwardBackward(kind, logits: z, output: &y, target: x, dz: &dz, count: n, dim: d,
                                     scale: scale, perImageSum: perImageSum)
        let analytic = dz.map { $0 / scale }
        let zb = FloatBuffer(n * d)
        for i in 0..<(n * d) { zb[i] = z[i] }
        // The loss in Double from the naive formula, so the FD quotient is not limited by Float sums.
        GradCheck.check("\(kind) perImageSum=\(perImageSum)", x: zb.pointer, count: n * d, analytic: analytic,
                        h: 1e-3, rtol: 1e-3, atol: perImageSum ? 1e-6 : 1e-7, loss: {
                            LossTests.naiveSum(kind, z: zb.array, x: x, n: n, d: d, perImageSum: perImageSum)
                        }, file: file, line: line)
        // And the head's own returned sum gives the same derivative. Looser (2e-2): the head sums
        // each row in Float, so L(±h) carries ~1e-7·|L| of rounding, which the quotient divides by
        // 2h; the Double check above is the one at 1e-3.
        var yy = [Float](repeating: 0, count: n * d)
        GradCheck.check("\(kind) perImageSum=\(perImageSum) (own sum)", x: zb.pointer, count: n * d, analytic: analytic,
                        indices: Array(stride(from: 0, to: n * d, by: 7)), h: 2e-2, rtol: 2e-2,
                        atol: perImageSum ? 2e-4 : 5e-6, loss: {
                            LossHead.forwardBackward(kind, logits: zb.pointer, output: &yy, target: x, dz: nil, count: n, dim: d,
                                                     scale: 1, perImageSum: perImageSum)
                        }, file: file, line: line)
    }

    func testGradientMSE() {
        checkGradient(.mse, perImageSum: false, scale: 1)
        checkGradient(.mse, perImageSum: true, scale: 0.25)
    }

    func testGradientBCE() {
        checkGradient(.bce, perImageSum: false, scale: 1)
        checkGradient(.bce, perImageSum: true, scale: 1.0 / 3)
    }

    func testGradientL1AwayFromKink() {
        checkGradient(.l1, perImageSum: false, scale: 1)
        checkGradient(.l1, perImageSum: true, scale: 0.5)
    }

    func testBCESafeAtLargeLogits() {
        // |z| = 80: σ(z) rounds to 1 (or e^−80 ≈ 1.8e−35) in Float; the naive log(1 − y) is −inf.
        let z: [Float] = [80, 80, -80, -80, 80, -80]
        let x: [Float] = [1, 0, 1, 0, 0.25, 0.75]
        var y = [Float](repeating: 0, count: 6), dz = [Float](repeating: 0, count: 6)
        let got = LossHead.forwardBackward(.bce, logits: z, output: &y, target: x, dz: &dz, count: 1, dim: 6,
                                           scale: 1, perImageSum: true)
        // Analytic: softplus(z) − x·z, with softplus(80) = 80 + log1p(e^−80), softplus(−80) = log1p(e^−80).
        var want = 0.0
        for i in 0..<6 {
            let zd = Double(z[i]), xd = Double(x[i])
            want += max(zd, 0) + log1p(exp(-abs(zd))) - xd * zd
        }
        XCTAssertTrue(got.isFinite, "BCE at |z| = 80 is \(got)")
        XCTAssertEqual(got, want, accuracy: 1e-4 * want)
        XCTAssertEqual(want, 80 + 0 + 80 + 0 + 60 + 60, accuracy: 1e-9)
        for i in 0..<6 {
            XCTAssertTrue(dz[i].isFinite && y[i].isFinite)
            XCTAssertEqual(Double(dz[i]), LossTests.sigmoid(Double(z[i])) - Double(x[i]), accuracy: 1e-6, "dz[\(i)]")
        }
        // evalSums too.
        let (_, b) = LossHead.evalSums(logits: z, output: &y, target: x, count: 6)
        XCTAssertTrue(b.isFinite)
        XCTAssertEqual(b, want, accuracy: 1e-4 * want)
    }

    func testEvalSumsMatchNaive() {
        // 2.5 images' worth: the 784-element blocks and a partial tail.
        let count = 784 * 2 + 392
        let z = GradCheck.random(count, seed: 5, -4, 4)
        let x = GradCheck.random(count, seed: 6, 0, 1)
        var y = [Float](repeating: 0, count: count)
        let (sse, bce) = LossHead.evalSums(logits: z, output: &y, target: x, count: count)
        var wantSSE = 0.0, wantBCE = 0.0
        for i in 0..<count {
            wantSSE += LossTests.naive(.mse, z[i], x[i])
            wantBCE += LossTests.naive(.bce, z[i], x[i])
            XCTAssertEqual(Double(y[i]), LossTests.sigmoid(Double(z[i])), accuracy: 1e-6)
        }
        XCTAssertEqual(sse, wantSSE, accuracy: 1e-5 * wantSSE)
        XCTAssertEqual(bce, wantBCE, accuracy: 1e-5 * wantBCE)
        // Consistent with forwardBackward's per-pixel mean on whole images.
        var y2 = [Float](repeating: 0, count: 784 * 2)
        let mse = LossHead.forwardBackward(.mse, logits: z, output: &y2, target: x, dz: nil, count: 2, dim: 784, scale: 1)
        var sse2 = 0.0
        for i in 0..<(784 * 2) { sse2 += LossTests.naive(.mse, z[i], x[i]) }
        XCTAssertEqual(mse * 784, sse2, accuracy: 1e-5 * sse2)
    }
}
