import CBLAS
import Foundation

/// The reference for "how close to the BLAS limit": cblas_sgemm GFLOP/s on this machine, now.
public enum SgemmBench {
    /// Best-of-`repeats` GFLOP/s of C[m, n] = A[m, k] · B[k, n] with the current BLAS threads.
    public static func gflops(m: Int, n: Int, k: Int, repeats: Int = 20) -> Double {
        let a = FloatBuffer(m * k), b = FloatBuffer(k * n), c = FloatBuffer(m * n)
        var g = SplitMix64(seed: 1)
        for i in 0..<a.count { a[i] = g.uniform(-1, 1) }
        for i in 0..<b.count { b[i] = g.uniform(-1, 1) }
        var best = Double.infinity
        let inner = max(1, Int(2e8 / Double(2 * m * n * k)))  // ~0.2 GFLOP per timing
        for _ in 0..<repeats {
            let t0 = now()
            for _ in 0..<inner {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a.pointer, Int32(k),
                            b.pointer, Int32(n), 0, c.pointer, Int32(n))
            }
            best = min(best, (now() - t0) / Double(inner))
        }
        return 2 * Double(m * n * k) / best / 1e9
    }

    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}
