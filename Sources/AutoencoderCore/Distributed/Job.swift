import Foundation

/// One process of an aetrain job (an MPI rank, or a lone process): the set-up every subcommand
/// shares — the communicator (MPI when an MPI launcher started it, else local), the collective
/// watchdog, the BLAS thread policy, the signal handlers — and the end: errors become one line
/// and an exit code on every rank.
public enum Job {
    /// Runs `body` with the right communicator and never returns. Rank 0 alone prints progress;
    /// other ranks print only errors, prefixed `rank N:`.
    public static func run(collectiveTimeout: Double = 300, _ body: (Communicator) throws -> Void) -> Never {
        Signals.install()  // before MPI start-up, so an early SIGTERM is not fatal
        signal(SIGPIPE, SIG_IGN)
        let comm: Communicator
        if MPICommunicator.launchedByMPI() {
            let m = MPICommunicator()
            m.startWatchdog(timeout: collectiveTimeout)
            comm = m
        } else {
            comm = LocalCommunicator()
        }
        Threads.configure(worldSize: comm.size)
        do {
            try body(comm)
            comm.finalize()
            exit(0)
        } catch let e as AETError {
            printError((comm.rank == 0 ? "" : "rank \(comm.rank): ") + "error: " + e.message)
            if e.allRanks || comm.size == 1 {
                comm.finalize()
                exit(e.exitCode)
            }
            comm.abort(code: e.exitCode)
        } catch {
            printError((comm.rank == 0 ? "" : "rank \(comm.rank): ") + "error: \(error)")
            comm.abort(code: ExitCode.failure)
        }
    }
}
