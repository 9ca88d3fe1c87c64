import CBLAS
import Foundation

/// The BLAS thread policy of a rank.
public enum Threads {
    /// One BLAS thread per rank when there are several ranks and the user set neither
    /// OPENBLAS_NUM_THREADS nor OMP_NUM_THREADS; a single rank keeps OpenBLAS's default (all cores).
    public static func configure(worldSize: Int, env: [String: String] = ProcessInfo.processInfo.environment) {
        if worldSize > 1 && env["OPENBLAS_NUM_THREADS"] == nil && env["OMP_NUM_THREADS"] == nil {
            setenv("OPENBLAS_NUM_THREADS", "1", 1)
            setenv("OMP_NUM_THREADS", "1", 1)
            openblas_set_num_threads(1)
        }
    }

    public static var blasThreads: Int { Int(openblas_get_num_threads()) }
}
