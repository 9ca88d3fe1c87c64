import Foundation

/// A user-facing failure: one line naming the file or flag and the cause, plus the exit code.
///
/// Exit codes (documented in the README):
/// 1 generic failure, 2 usage error (bad flag), 3 bad input data or checkpoint,
/// 4 I/O failure writing outputs, 5 non-finite loss, 6 distributed failure (config mismatch,
/// another rank failed, collective timeout), 75 preempted (checkpoint written, resumable).
public struct AETError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var exitCode: Int32
    /// True when every rank is known to stop with this error (agreed through a collective, or
    /// derived from all-reduced values), so ranks may finalize MPI cleanly instead of aborting.
    public var allRanks: Bool

    public init(_ message: String, exitCode: Int32 = 1, allRanks: Bool = false) {
        self.message = message
        self.exitCode = exitCode
        self.allRanks = allRanks
    }

    public static func usage(_ m: String) -> AETError { AETError(m, exitCode: ExitCode.usage) }
    public static func data(_ m: String) -> AETError { AETError(m, exitCode: ExitCode.badInput) }
    public static func io(_ m: String) -> AETError { AETError(m, exitCode: ExitCode.io) }

    public var description: String { message }
}

/// Process exit codes, part of the CLI contract.
public enum ExitCode {
    public static let failure: Int32 = 1
    public static let usage: Int32 = 2
    public static let badInput: Int32 = 3
    public static let io: Int32 = 4
    public static let nonFinite: Int32 = 5
    public static let distributed: Int32 = 6
    public static let preempted: Int32 = 75
}

/// Writes one line to stderr (unbuffered).
public func printError(_ s: String) {
    fputs(s + "\n", stderr)  // C stdio: a closed or full stderr is an error code, not a crash
}

/// What the launcher (mpirun, srun) says about this process before MPI starts.
public enum Launcher {
    /// This process's rank as the launcher set it in the environment, or nil outside a launcher.
    public static var rank: Int? {
        let env = ProcessInfo.processInfo.environment
        for key in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] {
            if let r = env[key].flatMap(Int.init) { return r }
        }
        return nil
    }

    /// How many ranks the launcher started on this node, or nil.
    public static var localSize: Int? {
        let env = ProcessInfo.processInfo.environment
        for key in ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"] {
            if let n = env[key].flatMap(Int.init), n > 0 { return n }
        }
        return nil
    }
}
