import CBLAS
import Foundation

/// Principal component analysis with a chunked covariance and LAPACK's `dsyevd`.
///
/// The data is read in chunks of `chunkRows` rows: each chunk is converted to Float, centred
/// on the mean (computed in a first pass), and its Gram matrix (`cblas_ssyrk`) is added to a
/// Double d×d accumulator, so memory is O(d² + chunkRows·d) whatever the number of rows.
/// The covariance uses the unbiased divisor n − 1. Projections and reconstructions go through
/// `cblas_sgemm`.
public struct PCA: Sendable {
    /// Input dimension d.
    public let dim: Int
    /// Number of kept components k.
    public let componentCount: Int
    /// Number of rows the model was fitted on.
    public let sampleCount: Int
    /// Per-feature mean (d values).
    public var mean: [Float]
    /// The top-k eigenvectors of the covariance, row-major k×d (row i = component i), in
    /// descending eigenvalue order; each is unit length, signed so its largest-magnitude entry
    /// is positive.
    public var components: [Float]
    /// All d eigenvalues of the covariance, descending (clamped at 0 from below).
    public var eigenvalues: [Double]

    /// Rows per chunk for the covariance, projection and error passes.
    public static let chunkRows = 1_024

    /// Share of the total variance carried by each kept component.
    public var explainedVarianceRatio: [Double] {
        let total = eigenvalues.reduce(0, +)
        guard total > 0 else { return [Double](repeating: 0, count: componentCount) }
        return eigenvalues.prefix(componentCount).map { $0 / total }
    }

    // MARK: - Fitting

    /// Fits on `n` images of `d` bytes each (row-major), scaled by `scale` (1/255 → [0, 1]).
    public static func fit(images: UnsafePointer<UInt8>, count n: Int, dim d: Int, components k: Int,
                           scale: Float = 1 / 255) throws -> PCA {
        try fit(count: n, dim: d, components: k) { start, rows, out in
            let src = images + start * d
            for i in 0..<(rows * d) { out[i] = Float(src[i]) * scale }
        }
    }

    /// Fits on `n` rows of `d` Floats (row-major, `data.count == n * d`).
    public static func fit(data: [Float], count n: Int, dim d: Int, components k: Int) throws -> PCA {
        guard data.count == n * d else {
            throw AETError.data("PCA: \(data.count) values for \(n) rows of \(d)")
        }
        return try data.withUnsafeBufferPointer { buf in
            try fit(count: n, dim: d, components: k) { start, rows, out in
                out.update(from: buf.baseAddress! + start * d, count: rows * d)
            }
        }
    }

    /// Fits from a row source: `fill(start, rows, out)` writes rows start..<start+rows as Floats.
    static func fit(count n: Int, dim d: Int, components k: Int,
                    fill: (Int, Int, UnsafeMutablePointer<Float>) -> Void) throws -> PCA {
        guard d >= 1 else { throw AETError.data("PCA: dimension must be >= 1 (got \(d))") }
        guard n >= 2 else { throw AETError.data("PCA: need at least 2 rows (got \(n))") }
        guard k >= 1 && k <= d else { throw AETError.data("PCA: components must be in 1...\(d) (got \(k))") }
        let chunk = min(chunkRows, n)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: chunk * d)
        defer { buf.deallocate() }

        // Pass 1: mean.
        var sum = [Double](repeating: 0, count: d)
        var start = 0
        while start < n {
            let rows = min(chunk, n - start)
            fill(start, rows, buf)
            sum.withUnsafeMutableBufferPointer { s in
                for r in 0..<rows {
                    let row = buf + r * d
                    for j in 0..<d { s[j] += Double(row[j]) }
                }
            }
            start += rows
        }
        let meanD = sum.map { $0 / Double(n) }
        let mean = meanD.map { Float($0) }

        // Pass 2: covariance, one Float syrk per chunk accumulated in Double (upper triangle).
        var acc = [Double](repeating: 0, count: d * d)
        let gram = UnsafeMutablePointer<Float>.allocate(capacity: d * d)
        defer { gram.deallocate() }
        start = 0
        while start < n {
            let rows = min(chunk, n - start)
            fill(start, rows, buf)
            mean.withUnsafeBufferPointer { m in
                for r in 0..<rows {
                    let row = buf + r * d
                    for j in 0..<d { row[j] -= m[j] }
                }
            }
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(rows),
                        1, buf, Int32(d), 0, gram, Int32(d))
            acc.withUnsafeMutableBufferPointer { a in
                for i in 0..<d {
                    for j in i..<d { a[i * d + j] += Double(gram[i * d + j]) }
                }
            }
            start += rows
        }
        let denom = Double(n - 1)
        for i in 0..<d {
            for j in i..<d {
                let v = acc[i * d + j] / denom
                acc[i * d + j] = v
                acc[j * d + i] = v
            }
        }

        // Eigen-decomposition (ascending eigenvalues; column j of the column-major result,
        // i.e. the contiguous slice j*d..<(j+1)*d, is eigenvector j).
        let (w, vectors) = try symmetricEigen(acc, n: d)

        var comps = [Float](repeating: 0, count: k * d)
        for c in 0..<k {
            let j = d - 1 - c
            let v = vectors[(j * d)..<((j + 1) * d)]
            var big = v.startIndex
            for i in v.indices where abs(v[i]) > abs(v[big]) { big = i }
            let sign: Double = v[big] < 0 ? -1 : 1
            for (i, x) in v.enumerated() { comps[c * d + i] = Float(sign * x) }
        }
        let eig = w.reversed().map { max(0, $0) }
        return PCA(dim: d, componentCount: k, sampleCount: n, mean: mean, components: comps, eigenvalues: eig)
    }

    /// Eigenvalues (ascending) and eigenvectors of a symmetric n×n matrix via `dsyevd_`,
    /// after a workspace query (lwork = liwork = -1).
    static func symmetricEigen(_ matrix: [Double], n: Int) throws -> (values: [Double], vectors: [Double]) {
        var a = matrix
        var w = [Double](repeating: 0, count: n)
        var jobz = CChar(UInt8(ascii: "V")), uplo = CChar(UInt8(ascii: "L"))
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var workQuery = 0.0
        var iworkQuery: Int32 = 0
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &workQuery, &lwork, &iworkQuery, &liwork, &info)
        guard info == 0 else { throw AETError("PCA: dsyevd workspace query failed (info \(info))") }
        lwork = Int32(max(1, workQuery.rounded(.up)))
        liwork = max(1, iworkQuery)
        var work = [Double](repeating: 0, count: Int(lwork))
        var iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
        guard info == 0 else { throw AETError("PCA: dsyevd failed (info \(info))") }
        return (w, a)
    }

    // MARK: - Using the model

    /// Projects `n` rows of d Floats onto the components: returns n×k centred coordinates.
    public func project(_ x: UnsafePointer<Float>, count n: Int) -> [Float] {
        let d = dim, k = componentCount
        var out = [Float](repeating: 0, count: n * k)
        guard n > 0 else { return out }
        let chunk = min(Self.chunkRows, n)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: chunk * d)
        defer { buf.deallocate() }
        out.withUnsafeMutableBufferPointer { o in
            var start = 0
            while start < n {
                let rows = min(chunk, n - start)
                centre(x + start * d, rows: rows, into: buf)
                projectCentred(buf, rows: rows, into: o.baseAddress! + start * k)
                start += rows
            }
        }
        return out
    }

    /// Maps `n` rows of k component coordinates back to input space: returns n×d values
    /// (mean + codes · components).
    public func reconstruct(_ codes: UnsafePointer<Float>, count n: Int) -> [Float] {
        let d = dim, k = componentCount
        var out = [Float](repeating: 0, count: n * d)
        guard n > 0 else { return out }
        out.withUnsafeMutableBufferPointer { o in
            components.withUnsafeBufferPointer { c in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(d), Int32(k),
                            1, codes, Int32(k), c.baseAddress, Int32(d), 0, o.baseAddress, Int32(d))
            }
            mean.withUnsafeBufferPointer { m in
                for r in 0..<n {
                    for j in 0..<d { o[r * d + j] += m[j] }
                }
            }
        }
        return out
    }

    /// Mean over all pixels of (x − reconstruction(x))² for `n` images of `d` bytes, scaled by
    /// `scale`; computed in chunks.
    public func meanSquaredError(images: UnsafePointer<UInt8>, count n: Int, dim d: Int,
                                 scale: Float = 1 / 255) -> Double {
        precondition(d == dim, "PCA.meanSquaredError: dim \(d) != fitted dim \(dim)")
        return meanSquaredError(count: n) { start, rows, out in
            let src = images + start * d
            for i in 0..<(rows * d) { out[i] = Float(src[i]) * scale }
        }
    }

    /// Mean over all values of (x − reconstruction(x))² for `n` rows of d Floats.
    public func meanSquaredError(data: UnsafePointer<Float>, count n: Int) -> Double {
        let d = dim
        return meanSquaredError(count: n) { start, rows, out in
            out.update(from: data + start * d, count: rows * d)
        }
    }

    func meanSquaredError(count n: Int, fill: (Int, Int, UnsafeMutablePointer<Float>) -> Void) -> Double {
        guard n > 0 else { return .nan }
        let d = dim, k = componentCount
        let chunk = min(Self.chunkRows, n)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: chunk * d)
        let z = UnsafeMutablePointer<Float>.allocate(capacity: chunk * k)
        let r = UnsafeMutablePointer<Float>.allocate(capacity: chunk * d)
        defer { x.deallocate(); z.deallocate(); r.deallocate() }
        var total = 0.0
        var start = 0
        while start < n {
            let rows = min(chunk, n - start)
            fill(start, rows, x)
            centre(x, rows: rows, into: x)
            projectCentred(x, rows: rows, into: z)
            components.withUnsafeBufferPointer { c in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(d), Int32(k),
                            1, z, Int32(k), c.baseAddress, Int32(d), 0, r, Int32(d))
            }
            for row in 0..<rows {
                var s = 0.0
                for j in 0..<d {
                    let e = Double(x[row * d + j] - r[row * d + j])
                    s += e * e
                }
                total += s
            }
            start += rows
        }
        return total / (Double(n) * Double(d))
    }

    /// out[r, j] = x[r, j] − mean[j]   (out may alias x).
    private func centre(_ x: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>) {
        let d = dim
        mean.withUnsafeBufferPointer { m in
            for r in 0..<rows {
                for j in 0..<d { out[r * d + j] = x[r * d + j] - m[j] }
            }
        }
    }

    /// z (rows×k) = xc (rows×d) · componentsᵀ.
    private func projectCentred(_ xc: UnsafePointer<Float>, rows: Int, into z: UnsafeMutablePointer<Float>) {
        let d = dim, k = componentCount
        components.withUnsafeBufferPointer { c in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(k), Int32(d),
                        1, xc, Int32(d), c.baseAddress, Int32(d), 0, z, Int32(k))
        }
    }
}
