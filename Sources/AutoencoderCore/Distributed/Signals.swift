import Foundation

/// The signal that asked this rank to stop (SIGTERM, SIGUSR1, SIGHUP or SIGINT), or 0. Set by the
/// handler, read at step boundaries, where the ranks agree through the gradient all-reduce.
nonisolated(unsafe) var pendingStopSignal: Int32 = 0
/// The line a second SIGINT prints (built before the handlers are installed: a handler may only
/// call async-signal-safe functions such as write(2)).
nonisolated(unsafe) var secondInterruptLine: UnsafeMutableBufferPointer<CChar>? = nil
nonisolated(unsafe) var signalsDisabled = false

public enum Signals {
    /// The signals that ask a training run to stop at the next step boundary, checkpoint and
    /// exit 75. SIGHUP (a closed terminal or ssh session) is handled like SIGTERM.
    public static let stopSignals: [Int32] = [SIGTERM, SIGUSR1, SIGHUP, SIGINT]

    /// Installs handlers that only set a flag. `main` calls this before anything else, so a signal
    /// in the first milliseconds after exec is not fatal. A second SIGINT prints one line and
    /// ends the process at once with exit code 130 (no checkpoint). Idempotent; a no-op after
    /// `restoreDefaults()`. The stop signals are unblocked too.
    public static func install() {
        guard !signalsDisabled else { return }
        if secondInterruptLine == nil {
            let prefix = Launcher.rank.map { $0 == 0 ? "" : "rank \($0): " } ?? ""
            let text = prefix + "error: second SIGINT: stopping at once, without a checkpoint (exit 130)\n"
            let bytes = Array(text.utf8CString)
            let buf = UnsafeMutableBufferPointer<CChar>.allocate(capacity: bytes.count)
            _ = buf.initialize(from: bytes)
            secondInterruptLine = buf
        }
        let handler: @convention(c) (Int32) -> Void = { sig in
            if sig == SIGINT && pendingStopSignal != 0 {
                if let line = secondInterruptLine, let base = line.baseAddress {
                    _ = write(2, base, line.count - 1)
                }
                _exit(130)
            }
            pendingStopSignal = sig
        }
        for s in stopSignals { signal(s, handler) }
        // A launcher may start us with these blocked (the mask survives exec); one sent before
        // now is then pending and is delivered here, to the handler.
        var set = sigset_t()
        sigemptyset(&set)
        for s in stopSignals { sigaddset(&set, s) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// For commands that do not stop at step boundaries: the signals get their default action
    /// back (a SIGTERM ends the process as usual), and one that arrived after `install()` is
    /// delivered now. Later `install()` calls do nothing.
    public static func restoreDefaults() {
        signalsDisabled = true
        for s in stopSignals { signal(s, SIG_DFL) }
        let s = pendingStopSignal
        if s != 0 {
            pendingStopSignal = 0
            raise(s)
        }
    }

    public static var pending: Int32 { pendingStopSignal }

    public static func name(_ s: Int32) -> String {
        switch s {
        case SIGTERM: return "SIGTERM"
        case SIGUSR1: return "SIGUSR1"
        case SIGINT: return "SIGINT"
        case SIGHUP: return "SIGHUP"
        default: return "signal \(s)"
        }
    }
}
