import XCTest
import TestSupport
@testable import AutoencoderCore

final class PCATests: XCTestCase {
    static let variances: [Double] = [9, 4, 1, 0.25, 0.0625, 0.015625]

    /// Random orthonormal basis (rows) by Gram–Schmidt on Gaussian vectors.
    static func orthonormalBasis(_ d: Int, seed: UInt64) -> [[Double]] {
        var g = SplitMix64(seed: seed)
        var q: [[Double]] = []
        while q.count < d {
            var v = (0..<d).map { _ in Double(g.normal()) }
            for u in q {
                let dot = zip(u, v).map(*).reduce(0, +)
                v = zip(v, u).map { $0 - dot * $1 }
            }
            let norm = v.map { $0 * $0 }.reduce(0, +).squareRoot()
            if norm > 1e-6 { q.append(v.map { $0 / norm }) }
        }
        return q
    }

    /// n rows: mean + Σ_i sqrt(var_i) z_i q_i with independent standard normal z_i.
    static func synthetic(n: Int, seed: UInt64) -> (data: [Float], basis: [[Double]], mean: [Double]) {
        let d = variances.count
        let q = orthonormalBasis(d, seed: seed)
        let mu = (0..<d).map { Double($0) * 0.5 - 1 }
        var g = SplitMix64(seed: seed &+ 1)
        var data = [Float](repeating: 0, count: n * d)
        for r in 0..<n {
            var x = mu
            for i in 0..<d {
                let z = Double(g.normal()) * variances[i].squareRoot()
                for j in 0..<d { x[j] += z * q[i][j] }
            }
            for j in 0..<d { data[r * d + j] = Float(x[j]) }
        }
        return (data, q, mu)
    }

    /// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations, descending.
    static func jacobiEigenvalues(_ m: [[Double]]) -> [Double] {
        var a = m
        let n = a.count
        for _ in 0..<100 {
            var off = 0.0
            for i in 0..<n { for j in 0..<n where i != j { off += a[i][j] * a[i][j] } }
            if off < 1e-22 { break }
            for p in 0..<n {
                for q in (p + 1)..<n where abs(a[p][q]) > 1e-300 {
                    let theta = (a[q][q] - a[p][p]) / (2 * a[p][q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {  // rotate columns p, q
                        let akp = a[k][p], akq = a[k][q]
                        a[k][p] = c * akp - s * akq
                        a[k][q] = s * akp + c * akq
                    }
                    for k in 0..<n {  // rotate rows p, q
                        let apk = a[p][k], aqk = a[q][k]
                        a[p][k] = c * apk - s * aqk
                        a[q][k] = s * apk + c * aqk
                    }
                }
            }
        }
        return (0..<n).map { a[$0][$0] }.sorted(by: >)
    }

    /// Exact sample covariance (divisor n − 1) in Double, computed directly.
    static func sampleCovariance(_ data: [Float], n: Int, d: Int) -> [[Double]] {
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { mean[j] += Double(data[r * d + j]) } }
        mean = mean.map { $0 / Double(n) }
        var c = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for r in 0..<n {
            for i in 0..<d {
                let xi = Double(data[r * d + i]) - mean[i]
                for j in 0..<d { c[i][j] += xi * (Double(data[r * d + j]) - mean[j]) }
            }
        }
        return c.map { $0.map { $0 / Double(n - 1) } }
    }

    func testKnownSpectrumAndReconstructionError() throws {
        let n = 20_000, d = 6, k = 2
        let (data, basis, mu) = Self.synthetic(n: n, seed: 7)
        let pca = try PCA.fit(data: data, count: n, dim: d, components: k)

        XCTAssertEqual(pca.eigenvalues.count, d)
        XCTAssertEqual(pca.components.count, k * d)
        XCTAssertEqual(pca.mean.count, d)
        Compare.close("eigenvalues vs the known variances", pca.eigenvalues, Self.variances, rtol: 0.04)
        Compare.close("mean", pca.mean, mu, atol: 0.05)

        // Second way: exact sample eigenvalues by Jacobi on a directly computed covariance.
        let exact = Self.jacobiEigenvalues(Self.sampleCovariance(data, n: n, d: d))
        Compare.elementwise("eigenvalues vs Jacobi", pca.eigenvalues, exact,
                            tolerance: { _, _, x in 1e-5 * exact[0] + 1e-4 * x })

        // Components: orthonormal, aligned (up to sign) with the generating basis.
        for a in 0..<k {
            for b in 0..<k {
                var dot = 0.0
                for j in 0..<d { dot += Double(pca.components[a * d + j] * pca.components[b * d + j]) }
                XCTAssertEqual(dot, a == b ? 1 : 0, accuracy: 1e-5)
            }
            var align = 0.0
            for j in 0..<d { align += Double(pca.components[a * d + j]) * basis[a][j] }
            XCTAssertGreaterThan(abs(align), 0.99)
        }

        // Per-value MSE of the k-component reconstruction = Σ dropped eigenvalues / d
        // (exactly, with the population divisor n, for the data the model was fitted on).
        let mse = data.withUnsafeBufferPointer { pca.meanSquaredError(data: $0.baseAddress!, count: n) }
        let droppedExact = exact[k...].reduce(0, +) * Double(n - 1) / Double(n) / Double(d)
        XCTAssertEqual(mse, droppedExact, accuracy: 1e-3 * droppedExact)
        let droppedKnown = Self.variances[k...].reduce(0, +) / Double(d)
        XCTAssertEqual(mse, droppedKnown, accuracy: 0.05 * droppedKnown)
    }

    func testProjectAndReconstruct() throws {
        let n = 2_500, d = 6
        let (data, _, _) = Self.synthetic(n: n, seed: 11)
        // All components: reconstruction is the identity.
        let full = try PCA.fit(data: data, count: n, dim: d, components: d)
        let codes = data.withUnsafeBufferPointer { full.project($0.baseAddress!, count: n) }
        XCTAssertEqual(codes.count, n * d)
        let back = codes.withUnsafeBufferPointer { full.reconstruct($0.baseAddress!, count: n) }
        Compare.close("full-rank reconstruction", back, data, atol: 1e-4)
        let mseFull = data.withUnsafeBufferPointer { full.meanSquaredError(data: $0.baseAddress!, count: n) }
        XCTAssertLessThan(mseFull, 1e-9)

        // Fewer components: projection equals the dot product with each centred row, and the
        // variance of each coordinate equals its eigenvalue.
        let p3 = try PCA.fit(data: data, count: n, dim: d, components: 3)
        let z = data.withUnsafeBufferPointer { p3.project($0.baseAddress!, count: n) }
        XCTAssertEqual(z.count, n * 3)
        for r in [0, 1, 1_500, n - 1] {
            for c in 0..<3 {
                var dot: Float = 0
                for j in 0..<d { dot += (data[r * d + j] - p3.mean[j]) * p3.components[c * d + j] }
                XCTAssertEqual(z[r * 3 + c], dot, accuracy: 1e-4)
            }
        }
        for c in 0..<3 {
            var s = 0.0
            for r in 0..<n { s += Double(z[r * 3 + c]) * Double(z[r * 3 + c]) }
            XCTAssertEqual(s / Double(n - 1), p3.eigenvalues[c], accuracy: 1e-3 * p3.eigenvalues[c])
        }
    }

    func testByteImagesMatchFloatPath() throws {
        // 3,000 rows (not a multiple of the 1,024-row chunk) of correlated bytes.
        let n = 3_000, d = 10
        var g = SplitMix64(seed: 5)
        var bytes = [UInt8](repeating: 0, count: n * d)
        for r in 0..<n {
            let base = g.nextFloat() * 200
            for j in 0..<d { bytes[r * d + j] = UInt8(min(255, base + g.nextFloat() * Float(5 * j + 1))) }
        }
        let floats = bytes.map { Float($0) / 255 }
        let a = try bytes.withUnsafeBufferPointer {
            try PCA.fit(images: $0.baseAddress!, count: n, dim: d, components: 4)
        }
        let b = try PCA.fit(data: floats, count: n, dim: d, components: 4)
        Compare.close("byte vs float mean", a.mean, b.mean, atol: 1e-6)
        Compare.close("byte vs float eigenvalues", a.eigenvalues, b.eigenvalues, atol: 1e-6 * b.eigenvalues[0])
        XCTAssertEqual(a.eigenvalues, a.eigenvalues.sorted(by: >))
        let m1 = bytes.withUnsafeBufferPointer { a.meanSquaredError(images: $0.baseAddress!, count: n, dim: d) }
        let m2 = floats.withUnsafeBufferPointer { b.meanSquaredError(data: $0.baseAddress!, count: n) }
        XCTAssertEqual(m1, m2, accuracy: 1e-5 * m2)
        // Against the spectrum: Σ dropped eigenvalues / d (population divisor).
        let dropped = a.eigenvalues[4...].reduce(0, +) * Double(n - 1) / Double(n) / Double(d)
        XCTAssertEqual(m1, dropped, accuracy: 2e-3 * dropped)
    }

    func testInvalidArgumentsThrow() {
        XCTAssertThrowsError(try PCA.fit(data: [1, 2, 3], count: 1, dim: 3, components: 1))
        XCTAssertThrowsError(try PCA.fit(data: [1, 2, 3, 4], count: 2, dim: 2, components: 3))
        XCTAssertThrowsError(try PCA.fit(data: [1, 2, 3], count: 2, dim: 2, components: 1))
    }
}
