import Foundation

/// The signal that asked this rank to stop (SIGTERM, SIGUSR1 or SIGINT), or 0. Set by the
/// handler, read at step boundaries, where the ranks agree through the gradient all-reduce.
var pendingStopSignal: Int32 = 0

public enum Signals {
    /// Installs handlers that only set a flag. A second SIGINT ends the process at once.
    public static func install() {
        let handler: @convention(c) (Int32) -> Void = { sig in
            if sig == SIGINT && pendingStopSignal != 0 { _exit(130) }
            pendingStopSignal = sig
        }
        signal(SIGTERM, handler)
        signal(SIGUSR1, handler)
        signal(SIGINT, handler)
    }

    public static var pending: Int32 { pendingStopSignal }

    public static func name(_ s: Int32) -> String {
        switch s {
        case SIGTERM: return "SIGTERM"
        case SIGUSR1: return "SIGUSR1"
        case SIGINT: return "SIGINT"
        default: return "signal \(s)"
        }
    }
}
