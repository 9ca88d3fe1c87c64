import CBLAS
import CKernels
import Foundation

/// The reference for "how close to the machine's limit": one-core GFLOP/s of oneDNN's matmul
/// primitive (f32 and bf16 inputs, f32 accumulation) at 512³ and at the shapes of an mlp3 step,
/// and, for comparison, OpenBLAS's cblas_sgemm.
public enum SgemmBench {
    /// A product C[m, n] = op(A) · op(B) as a training step runs it: `nt` = A·Bᵀ (forward),
    /// `tn` = Aᵀ·B (weight gradient), `nn` = A·B (input gradient).
    public enum Form: String, CaseIterable, Sendable { case nn, nt, tn }

    /// Best-of-`repeats` GFLOP/s of one oneDNN matmul primitive with the current OpenMP threads,
    /// and the implementation oneDNN chose.
    public static func matmul(m: Int, n: Int, k: Int, form: Form, precision: Precision, repeats: Int = 20) -> (gflops: Double, implementation: String) {
        let a = FloatBuffer(m * k), b = FloatBuffer(k * n), c = FloatBuffer(m * n)
        var g = SplitMix64(seed: 1)
        for i in 0..<a.count { a[i] = g.uniform(-1, 1) }
        for i in 0..<b.count { b[i] = g.uniform(-1, 1) }
        let t = precision
        var ap = UnsafeRawPointer(a.pointer), bp = UnsafeRawPointer(b.pointer)
        let al = BF16Buffer(t == .bf16 ? a.count : 0), bl = BF16Buffer(t == .bf16 ? b.count : 0)
        if t == .bf16 {
            aet_f32_to_bf16(a.pointer, al.pointer, a.count)
            aet_f32_to_bf16(b.pointer, bl.pointer, b.count)
            ap = UnsafeRawPointer(al.pointer)
            bp = UnsafeRawPointer(bl.pointer)
        }
        // A stored [m, k] (or [k, m] for tn), B stored [k, n] (or [n, k] for nt).
        let aOp: MatMul.Operand = form == .tn ? .transposed(m, t) : .rows(k, t)
        let bOp: MatMul.Operand = form == .nt ? .transposed(k, t) : .rows(n, t)
        let op = MatMul(m: m, n: n, k: k, a: aOp, b: bOp, c: .rows(n, .f32), what: "bench")
        return (time(m: m, n: n, k: k, repeats: repeats) { op.run(ap, bp, c.pointer) }, op.implementation)
    }

    /// Best-of-`repeats` GFLOP/s of C[m, n] = A[m, k] · B[k, n] with OpenBLAS and its current threads.
    public static func gflops(m: Int, n: Int, k: Int, repeats: Int = 20) -> Double {
        let a = FloatBuffer(m * k), b = FloatBuffer(k * n), c = FloatBuffer(m * n)
        var g = SplitMix64(seed: 1)
        for i in 0..<a.count { a[i] = g.uniform(-1, 1) }
        for i in 0..<b.count { b[i] = g.uniform(-1, 1) }
        return time(m: m, n: n, k: k, repeats: repeats) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a.pointer, Int32(k),
                        b.pointer, Int32(n), 0, c.pointer, Int32(n))
        }
    }

    private static func time(m: Int, n: Int, k: Int, repeats: Int, _ body: () -> Void) -> Double {
        var best = Double.infinity
        let inner = max(1, Int(2e8 / Double(2 * m * n * k)))  // ~0.2 GFLOP per timing
        body()  // warm-up (and primitive creation outside the timing)
        for _ in 0..<repeats {
            let t0 = now()
            for _ in 0..<inner { body() }
            best = min(best, (now() - t0) / Double(inner))
        }
        return 2 * Double(m * n * k) / best / 1e9
    }

    /// OpenBLAS and oneDNN threads (oneDNN's are OpenMP's).
    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(n))
        DNNL.setThreads(n)
    }
}
