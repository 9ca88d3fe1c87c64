import CMPI
import Foundation

/// Open MPI. A watchdog thread aborts the job when a collective stays pending longer than
/// `collectiveTimeout` seconds (a stalled or stopped rank), naming the rank, operation and step.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public var currentStep = 0
    private let state = WatchState()
    private var watchdog: Thread?
    /// Outstanding non-blocking reductions (fixed capacity: no allocation per step).
    private let requests = UnsafeMutablePointer<MPI_Request?>.allocate(capacity: 1024)
    private var pending = 0
    /// Shared windows (kept for the life of the process; their epoch is closed at finalize).
    private var windows: [MPI_Win?] = []

    final class WatchState: @unchecked Sendable {
        let lock = NSLock()
        var op: String? = nil
        var since: Double = 0
        var step = 0
        var timeout: Double = 0
    }

    /// True when this process was started by an MPI launcher (mpirun, srun --mpi=pmix).
    public static func launchedByMPI(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_SIZE"] != nil
            || env["PMI_RANK"] != nil
    }

    public init() {
        if aet_mpi_initialized() == 0 { _ = aet_mpi_init() }
        rank = Int(aet_mpi_rank())
        size = Int(aet_mpi_size())
    }

    /// Starts the stall watchdog (0 disables it).
    public func startWatchdog(timeout: Double) {
        guard timeout > 0, watchdog == nil else { return }
        state.timeout = timeout
        let st = state, r = rank
        let t = Thread {
            while true {
                Thread.sleep(forTimeInterval: min(1, max(0.05, st.timeout / 10)))
                st.lock.lock()
                let op = st.op, since = st.since, step = st.step
                st.lock.unlock()
                if let op, since > 0, now() - since > st.timeout {
                    printError("rank \(r): collective '\(op)' at step \(step) pending for more than \(Int(st.timeout)) s (--collective-timeout): a rank is stalled or dead; aborting the job")
                    _ = aet_mpi_abort(ExitCode.distributed)
                    _exit(ExitCode.distributed)
                }
            }
        }
        t.start()
        watchdog = t
    }

    /// Shared windows opened on this communicator (see `SharedWindow`): their epochs are closed
    /// at `finalize`, before MPI is.
    func keepUntilFinalize(window: MPI_Win?) { windows.append(window) }

    /// Marks a collective as pending for the watchdog (`what` names it in the timeout message).
    @inline(__always) func beginCollective(_ what: String) {
        guard state.timeout > 0 else { return }
        state.lock.lock()
        state.op = what
        state.since = now()
        state.step = currentStep
        state.lock.unlock()
    }

    @inline(__always) func endCollective() {
        guard state.timeout > 0 else { return }
        state.lock.lock()
        state.op = nil
        state.lock.unlock()
    }

    public func allreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_allreduce_float(buf, Int32(count))
    }

    public func allreduceSum(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_allreduce_double(buf, Int32(count))
    }

    public func allreduceMax(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_allreduce_max_double(buf, Int32(count))
    }

    public func startAllreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {
        guard count > 0 else { return }
        if pending == 1024 { waitAll(what: what) }
        _ = aet_mpi_iallreduce_float(buf, Int32(count), requests + pending)
        pending += 1
    }

    public func progress() {
        for i in 0..<pending { _ = aet_mpi_test(requests + i) }
    }

    public func waitAll(what: String) {
        beginCollective(what); defer { endCollective() }
        for i in 0..<pending { _ = aet_mpi_wait(requests + i) }
        pending = 0
    }

    public func broadcast(_ buf: UnsafeMutableRawPointer, bytes: Int, root: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        var off = 0
        while off < bytes {
            let n = min(bytes - off, 1 << 30)
            _ = aet_mpi_bcast_bytes(buf + off, Int32(n), Int32(root))
            off += n
        }
    }

    public func barrier(what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_barrier()
    }

    public func abort(code: Int32) -> Never {
        _ = aet_mpi_abort(code)
        exit(code)
    }

    public func finalize() {
        guard aet_mpi_finalized() == 0 else { return }
        for w in windows { _ = aet_mpi_shared_release(w) }
        windows = []
        _ = aet_mpi_finalize()
    }
}
