import CBLAS
import Foundation

/// The compute thread policy of a rank.
public enum Threads {
    /// One compute thread per rank when there are several ranks (one rank per core) and the user
    /// set neither OPENBLAS_NUM_THREADS nor OMP_NUM_THREADS: oneDNN's OpenMP threads and
    /// OpenBLAS's (the PCA baseline). A single rank keeps the defaults (all cores).
    public static func configure(worldSize: Int, env: [String: String] = ProcessInfo.processInfo.environment) {
        if worldSize > 1 && env["OPENBLAS_NUM_THREADS"] == nil && env["OMP_NUM_THREADS"] == nil {
            setenv("OPENBLAS_NUM_THREADS", "1", 1)
            setenv("OMP_NUM_THREADS", "1", 1)
            openblas_set_num_threads(1)
            DNNL.setThreads(1)  // OpenMP read its environment when it loaded: set it directly
        }
    }

    /// Threads of the training step's compute (oneDNN's OpenMP threads); summary.json `blas_threads`.
    public static var blasThreads: Int { DNNL.threads }
}
