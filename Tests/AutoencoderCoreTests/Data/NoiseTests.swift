import Foundation
import XCTest
@testable import AutoencoderCore

final class NoiseTests: XCTestCase {
    let dim = 784

    /// Applies `spec` to `count` copies of `clean` (one image) and returns the noisy batch.
    func corrupt(_ spec: NoiseSpec, clean: [Float], count: Int, seed: UInt64 = 1, key: Int = 0, firstIndex: Int = 0) -> [Float] {
        var src = [Float]()
        for _ in 0..<count { src += clean }
        var out = [Float](repeating: -1, count: src.count)
        spec.apply(clean: src, noisy: &out, count: count, dim: clean.count, seed: seed, key: key, firstIndex: firstIndex)
        return out
    }

    func constant(_ v: Float) -> [Float] { [Float](repeating: v, count: dim) }

    func testGaussianIsAdditiveAndClipped() {
        let std: Float = 0.1
        let y = corrupt(NoiseSpec(kind: .gaussian, amount: std), clean: constant(0.5), count: 8)
        let d = y.map { Double($0) - 0.5 }
        let mean = d.reduce(0, +) / Double(d.count)
        let sd = (d.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 5 * 0.1 / Double(d.count).squareRoot())
        XCTAssertEqual(sd, 0.1, accuracy: 0.01)  // clipping at 5σ is negligible
        XCTAssertTrue(y.allSatisfy { $0 >= 0 && $0 <= 1 })
        // Large noise: values are clipped to exactly 0 and 1, nothing outside.
        let big = corrupt(NoiseSpec(kind: .gaussian, amount: 5), clean: constant(0.5), count: 4)
        XCTAssertTrue(big.allSatisfy { $0 >= 0 && $0 <= 1 })
        let zeros = big.filter { $0 == 0 }.count, ones = big.filter { $0 == 1 }.count
        // P(|0.5 + 5n| clipped) = P(n < −0.1) ≈ 0.46 each side.
        XCTAssertEqual(Double(zeros) / Double(big.count), 0.46, accuracy: 0.04)
        XCTAssertEqual(Double(ones) / Double(big.count), 0.46, accuracy: 0.04)
        // Zero amount is the identity.
        let x = GradCheck.random(dim, seed: 3, 0, 1)
        XCTAssertTrue(corrupt(NoiseSpec(kind: .gaussian, amount: 0), clean: x, count: 1) == x, "gaussian:0 changed the input")
    }

    func testSpeckleIsMultiplicative() {
        // Half the pixels are 0 (must stay 0), the rest 0.5.
        var x = constant(0.5)
        for i in stride(from: 0, to: dim, by: 2) { x[i] = 0 }
        let std: Float = 0.2
        let y = corrupt(NoiseSpec(kind: .speckle, amount: std), clean: x, count: 8)
        var rel: [Double] = []
        for (i, v) in y.enumerated() {
            XCTAssertTrue(v >= 0 && v <= 1)
            if x[i % dim] == 0 { XCTAssertEqual(v, 0, "speckle changed a black pixel") }
            else { rel.append(Double(v) / 0.5 - 1) }  // = std·n (|n| < 5 keeps 0.5(1 + 0.2n) in [0, 1])
        }
        let mean = rel.reduce(0, +) / Double(rel.count)
        let sd = (rel.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rel.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(sd, Double(std), accuracy: 0.02)
        // Clipping on bright pixels.
        let b = corrupt(NoiseSpec(kind: .speckle, amount: 3), clean: constant(0.9), count: 2)
        XCTAssertTrue(b.allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertTrue(b.contains(1))
        XCTAssertTrue(b.contains(0))
    }

    func testSaltPepperEqualParts() {
        let p: Float = 0.3
        let count = 8
        let y = corrupt(NoiseSpec(kind: .saltPepper, amount: p), clean: constant(0.5), count: count)
        let total = Double(y.count)
        let zeros = Double(y.filter { $0 == 0 }.count), ones = Double(y.filter { $0 == 1 }.count)
        let kept = Double(y.filter { $0 == 0.5 }.count)
        XCTAssertEqual(zeros + ones + kept, total, "salt-pepper produced values other than 0, 1 or the input")
        // Binomial: each of zeros and ones ~ P/2 · N, within 5σ.
        let sdHalf = (total * 0.15 * 0.85).squareRoot()
        XCTAssertEqual(zeros, total * Double(p) / 2, accuracy: 5 * sdHalf)
        XCTAssertEqual(ones, total * Double(p) / 2, accuracy: 5 * sdHalf)
        XCTAssertEqual(kept, total * (1 - Double(p)), accuracy: 5 * (total * 0.3 * 0.7).squareRoot())
        // P = 1 replaces everything; P = 0 nothing.
        let all = corrupt(NoiseSpec(kind: .saltPepper, amount: 1), clean: constant(0.5), count: 2)
        XCTAssertTrue(all.allSatisfy { $0 == 0 || $0 == 1 })
        let none = corrupt(NoiseSpec(kind: .saltPepper, amount: 0), clean: constant(0.5), count: 2)
        XCTAssertTrue(none.allSatisfy { $0 == 0.5 })
    }

    func testMaskZeroesFraction() {
        let p: Float = 0.25
        let x = GradCheck.random(dim, seed: 4, 0.1, 1)  // no zeros in the clean image
        let y = corrupt(NoiseSpec(kind: .mask, amount: p), clean: x, count: 8)
        var zeros = 0
        for (i, v) in y.enumerated() {
            if v == 0 { zeros += 1 } else { XCTAssertEqual(v, x[i % dim], "mask changed a kept pixel") }
        }
        let total = Double(y.count)
        XCTAssertEqual(Double(zeros), total * Double(p), accuracy: 5 * (total * 0.25 * 0.75).squareRoot())
        XCTAssertTrue(corrupt(NoiseSpec(kind: .mask, amount: 1), clean: x, count: 1).allSatisfy { $0 == 0 })
        XCTAssertTrue(corrupt(NoiseSpec(kind: .mask, amount: 0), clean: x, count: 1) == x, "mask:0 changed the input")
    }

    func testIndependentOfHowSamplesAreSplit() {
        // Eight different clean images.
        let clean = GradCheck.random(8 * dim, seed: 5, 0, 1)
        for kind in NoiseSpec.Kind.allCases {
            let spec = NoiseSpec(kind: kind, amount: kind == .gaussian || kind == .speckle ? 0.3 : 0.4)
            var one = [Float](repeating: 0, count: 8 * dim)
            spec.apply(clean: clean, noisy: &one, count: 8, dim: dim, seed: 9, key: 3, firstIndex: 0)
            var two = [Float](repeating: 0, count: 8 * dim)
            clean.withUnsafeBufferPointer { c in
                two.withUnsafeMutableBufferPointer { t in
                    spec.apply(clean: c.baseAddress!, noisy: t.baseAddress!, count: 4, dim: dim, seed: 9, key: 3, firstIndex: 0)
                    spec.apply(clean: c.baseAddress! + 4 * dim, noisy: t.baseAddress! + 4 * dim, count: 4, dim: dim,
                               seed: 9, key: 3, firstIndex: 4)
                }
            }
            XCTAssertTrue(one == two, "\(kind): noise depends on the split")
            // One sample per call (world size 8).
            var singles = [Float](repeating: 0, count: 8 * dim)
            clean.withUnsafeBufferPointer { c in
                singles.withUnsafeMutableBufferPointer { t in
                    for s in 0..<8 {
                        spec.apply(clean: c.baseAddress! + s * dim, noisy: t.baseAddress! + s * dim, count: 1, dim: dim,
                                   seed: 9, key: 3, firstIndex: s)
                    }
                }
            }
            XCTAssertTrue(one == singles, "\(kind): one-at-a-time differs")
            XCTAssertFalse(one == clean, "\(kind): no noise applied")
            // A different key (step), seed or index changes the noise.
            var other = [Float](repeating: 0, count: 8 * dim)
            spec.apply(clean: clean, noisy: &other, count: 8, dim: dim, seed: 9, key: 4, firstIndex: 0)
            XCTAssertFalse(one == other, "\(kind): key ignored")
            spec.apply(clean: clean, noisy: &other, count: 8, dim: dim, seed: 10, key: 3, firstIndex: 0)
            XCTAssertFalse(one == other, "\(kind): seed ignored")
        }
    }

    func testNoiseKeyedByGlobalIndex() {
        // Identical clean images at indices 0 and 1 get different noise; the image at index 5
        // corrupted alone gets the same noise as inside a batch starting at 0.
        let x = constant(0.5)
        let spec = NoiseSpec(kind: .gaussian, amount: 0.2)
        let batch = corrupt(spec, clean: x, count: 6, seed: 2, key: 1, firstIndex: 0)
        XCTAssertFalse(Array(batch[0..<dim]) == Array(batch[dim..<(2 * dim)]), "samples 0 and 1 got the same noise")
        let alone = corrupt(spec, clean: x, count: 1, seed: 2, key: 1, firstIndex: 5)
        XCTAssertTrue(alone == Array(batch[(5 * dim)...]), "sample 5 alone differs from sample 5 in a batch")
    }

    func testParsing() throws {
        XCTAssertEqual(try NoiseSpec(parsing: "gaussian:0.5"), NoiseSpec(kind: .gaussian, amount: 0.5))
        XCTAssertEqual(try NoiseSpec(parsing: "speckle:0.25"), NoiseSpec(kind: .speckle, amount: 0.25))
        XCTAssertEqual(try NoiseSpec(parsing: "salt-pepper:0.1"), NoiseSpec(kind: .saltPepper, amount: 0.1))
        XCTAssertEqual(try NoiseSpec(parsing: "mask:1"), NoiseSpec(kind: .mask, amount: 1))
        XCTAssertEqual(NoiseSpec(kind: .saltPepper, amount: 0.1).description, "salt-pepper:0.1")
        XCTAssertEqual(try NoiseSpec(parsing: NoiseSpec(kind: .mask, amount: 0.3).description), NoiseSpec(kind: .mask, amount: 0.3))
        for bad in ["gaussian", "gaussian:", "blur:0.1", "gaussian:abc", "gaussian:-0.1", "gaussian:nan", "gaussian:inf",
                    "mask:1.5", "salt-pepper:2", "", ":0.5", "Gaussian:0.5"] {
            assertAETError("--noise \(bad)", contains: ["--noise " + bad], exitCode: ExitCode.usage) {
                _ = try NoiseSpec(parsing: bad)
            }
        }
        assertAETError("mask > 1", contains: ["--noise mask:1.5", "[0, 1]"]) { _ = try NoiseSpec(parsing: "mask:1.5") }
    }
}
