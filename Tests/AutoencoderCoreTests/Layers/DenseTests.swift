import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

final class DenseTests: XCTestCase {
    /// (in, out, batch): a tiny square-ish layer, batch 1, wide (many inputs, few outputs, as
    /// the first encoder layer), tall (few inputs, many outputs, as the last decoder layer), one
    /// unit, and odd sizes that are not multiples of any vector width.
    static let shapes: [(Int, Int, Int)] = [(7, 5, 4), (7, 5, 1), (300, 3, 2), (3, 200, 3), (1, 1, 1), (33, 17, 5)]

    func testDenseGradientsEveryActivationAndShape() {
        for (k, (i, o, b)) in Self.shapes.enumerated() {
            for act in Activation.allCases {
                let kinked = act == .relu || act == .leakyRelu
                // h 1e-2: Float32 rounding of the summed output stays ~1e-5 of the gradient while
                // the O(h²) truncation error is ~1e-5 for tanh/sigmoid. ReLU is piecewise linear
                // (no truncation error), so a smaller step keeps kinks out of reach; the rare
                // coordinate whose step still changes the sign pattern is left out.
                checkLayerGradients(Dense(i, o, activation: act), batch: b, seed: UInt64(11 + k), h: kinked ? 1e-3 : 1e-2,
                                    rtol: 1e-3, atol: 1e-4, kinks: kinked, maxChecks: 300)
            }
        }
    }

    func testDenseForwardMatchesNaive() {
        let layer = Dense(3, 2, activation: .identity)
        let p = FloatBuffer(8), g = FloatBuffer(8)
        layer.bind(parameters: p.pointer, gradients: g.pointer)
        // W = [[1,2,3],[4,5,6]], b = [0.5, -1]
        for (i, v) in [1, 2, 3, 4, 5, 6, 0.5, -1].enumerated() { p[i] = Float(v) }
        let x = FloatBuffer(3), y = FloatBuffer(2)
        x[0] = 1; x[1] = 0; x[2] = -1
        layer.forward(x.pointer, y.pointer, batch: 1)
        Compare.close("hand-computed y", y.array, [1 - 3 + 0.5, 4 - 6 - 1])
    }

    /// y = act(x Wᵀ + b) (nn.Linear: W stored [out, in]) against a naive Double product, for every
    /// shape and activation.
    func testDenseForwardMatchesNaiveAtEveryShape() {
        for (k, (i, o, b)) in Self.shapes.enumerated() {
            for act in Activation.allCases {
                let layer = Dense(i, o, activation: act)
                let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
                layer.bind(parameters: p.pointer, gradients: g.pointer)
                var rng = SplitMix64(seed: UInt64(50 + k))
                layer.initialize(.torch, rng: &rng)
                layer.reserve(maxBatch: b)
                let x = GradCheck.random(b * i, seed: UInt64(60 + k), -2, 2)
                let y = FloatBuffer(b * o)
                y.pointer.update(repeating: .nan, count: b * o)  // every output must be written
                x.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: b) }
                var ref = [Double](repeating: 0, count: b * o)
                for s in 0..<b {
                    for j in 0..<o {
                        var z = Double(p[o * i + j])
                        for q in 0..<i { z += Double(p[j * i + q]) * Double(x[s * i + q]) }
                        ref[s * o + j] = Self.reference(act, z)
                    }
                }
                Compare.close("Dense(\(i), \(o)) \(act) batch \(b)", y.array, ref, rtol: 1e-5, atol: 1e-6)
            }
        }
    }

    /// The activation formulas of torch.nn (ReLU, LeakyReLU(0.01), Tanh, Sigmoid), in Double.
    static func reference(_ act: Activation, _ z: Double) -> Double {
        switch act {
        case .identity: return z
        case .relu: return max(z, 0)
        case .leakyRelu: return z >= 0 ? z : 0.01 * z
        case .tanh: return Foundation.tanh(z)
        case .sigmoid: return 1 / (1 + Foundation.exp(-z))
        }
    }

    /// Each activation's forward value through a Dense layer with W = I, b = 0 (so y = act(x)),
    /// at points that matter: zero, both signs, the saturated tails, and large |z| (no NaN or Inf
    /// where the function is finite), against the reference formulas.
    func testActivationValuesAgainstReferenceFormulas() {
        let z: [Float] = [0, 1e-30, -1e-30, 0.5, -0.5, 1, -1, 2.5, -2.5, 8, -8, 20, -20, 45, -45, 88, -88, 100, -100, 1e4, -1e4,
                          Float.leastNormalMagnitude, -Float.leastNormalMagnitude, 3.4e38, -3.4e38]
        let n = z.count
        for act in Activation.allCases {
            let layer = Dense(n, n, activation: act)
            let p = FloatBuffer(layer.parameterCount), g = FloatBuffer(layer.parameterCount)
            layer.bind(parameters: p.pointer, gradients: g.pointer)
            for j in 0..<n { p[j * n + j] = 1 }
            layer.reserve(maxBatch: 1)
            let y = FloatBuffer(n)
            z.withUnsafeBufferPointer { layer.forward($0.baseAddress!, y.pointer, batch: 1) }
            let ref = z.map { Self.reference(act, Double($0)) }
            // Float32 libm-class accuracy: a few ulp relative, plus ~1e-7 absolute where the
            // value crosses the Float range of the result (sigmoid tails ~1e-38).
            Compare.close("activation \(act)", y.array, ref, rtol: 2e-6, atol: 1e-30)
            if act == .sigmoid {
                XCTAssertTrue(y.array.allSatisfy { $0 >= 0 && $0 <= 1 }, "sigmoid outside [0, 1]: \(y.array)")
            }
            if act == .tanh {
                XCTAssertTrue(y.array.allSatisfy { $0 >= -1 && $0 <= 1 }, "tanh outside [-1, 1]: \(y.array)")
            }
        }
        // The logistic used by the loss head and reconstruct.
        Compare.close("logistic", z.map { logistic($0) }, z.map { Self.reference(.sigmoid, Double($0)) }, rtol: 2e-6, atol: 1e-30)
    }
}
