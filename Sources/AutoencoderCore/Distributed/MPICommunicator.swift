import CKernels
import CMPI
import Foundation

/// Open MPI: the world (`init()`), or a communicator split from it (`splitByNode`, `split`) for
/// exchanges that work in groups of ranks. A watchdog thread aborts the job when a collective on
/// any of them stays pending longer than `collectiveTimeout` seconds (a stalled or stopped rank),
/// naming the rank, operation and step.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// The MPI communicator: MPI_COMM_WORLD, or one split from it.
    let handle: MPI_Comm
    /// Shared by the world and every communicator split from it.
    private let state: WatchState
    public var currentStep: Int {
        get { state.currentStep }
        set { state.currentStep = newValue }
    }
    private var watchdog: Thread?
    /// Outstanding non-blocking reductions (fixed capacity: no allocation per step).
    private let requests = UnsafeMutablePointer<MPI_Request?>.allocate(capacity: 1024)
    private var pending = 0

    /// The watchdog's view of the pending collective, the training step, and the shared windows
    /// (kept for the life of the process; their epochs are closed at finalize).
    final class WatchState: @unchecked Sendable {
        let lock = NSLock()
        var op: String? = nil
        var since: Double = 0
        var step = 0
        var timeout: Double = 0
        var currentStep = 0
        var windows: [MPI_Win?] = []
        /// > 0 while this rank waits for rank 0's own work (`waitingForRoot`): collectives begun
        /// then are not timed.
        var untimed = 0
    }

    /// True when this process was started by an MPI launcher (mpirun, srun --mpi=pmix).
    public static func launchedByMPI(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_SIZE"] != nil
            || env["PMI_RANK"] != nil
    }

    /// MPI_COMM_WORLD (initialises MPI).
    public convenience init() {
        if aet_mpi_initialized() == 0 { _ = aet_mpi_init() }
        self.init(handle: aet_mpi_comm_world(), state: WatchState())
    }

    private init(handle: MPI_Comm, state: WatchState) {
        self.handle = handle
        self.state = state
        rank = Int(aet_mpi_comm_rank(handle))
        size = Int(aet_mpi_comm_size(handle))
    }

    /// The ranks of this communicator that share this rank's node (MPI_Comm_split_type,
    /// MPI_COMM_TYPE_SHARED), in this communicator's rank order. Collective.
    public func splitByNode() -> MPICommunicator {
        var node: MPI_Comm? = nil
        _ = aet_mpi_comm_split_node(handle, &node)  // MPI errors are fatal: it returns only on success
        return MPICommunicator(handle: node!, state: state)
    }

    /// The ranks that pass the same `color`, ranked by `key` (MPI_Comm_split): e.g. the ranks
    /// with the same local index on every node. Collective.
    public func split(color: Int, key: Int) -> MPICommunicator {
        var group: MPI_Comm? = nil
        _ = aet_mpi_comm_split(handle, Int32(color), Int32(key), &group)
        return MPICommunicator(handle: group!, state: state)
    }

    /// The ranks that pass the same non-nil `color`, ranked by `key`; nil on a rank that passes nil
    /// (it joins no group). Collective over this communicator.
    public func split(color: Int?, key: Int) -> MPICommunicator? {
        var group: MPI_Comm? = nil
        _ = aet_mpi_comm_split(handle, color.map(Int32.init) ?? -1, Int32(key), &group)
        guard let g = group, aet_mpi_comm_is_null(g) == 0 else { return nil }
        return MPICommunicator(handle: g, state: state)
    }

    /// In-place sum of `count` floats over this communicator's ranks by the ring algorithm
    /// (reduce-scatter then all-gather, 2(p − 1) steps of count/p floats each: Patarasuk and Yuan
    /// 2009, the all-reduce of Horovod and NCCL), from point-to-point messages. `scratch` holds at
    /// least count/p + 1 floats. Unlike `MPI_Allreduce`, whose Open MPI algorithms malloc a scratch
    /// buffer on every call, it allocates nothing, so a training step that uses it stays
    /// allocation-free. Each chunk is summed in one fixed ring order and then copied, so every
    /// rank ends with the same bits.
    public func ringAllreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, scratch: UnsafeMutablePointer<Float>, what: String) {
        let p = size
        guard p > 1, count > 0 else { return }
        beginCollective(what); defer { endCollective() }
        let right = Int32((rank + 1) % p), left = Int32((rank + p - 1) % p)
        @inline(__always) func lo(_ c: Int) -> Int { c * count / p }
        @inline(__always) func len(_ c: Int) -> Int { (c + 1) * count / p - c * count / p }
        // Reduce-scatter: after step k rank r holds the partial sum of chunk (r − k − 1) over k + 2 ranks.
        for k in 0..<(p - 1) {
            let send = (rank - k + 2 * p) % p, recv = (rank - k - 1 + 2 * p) % p
            _ = aet_mpi_sendrecv_float(buf + lo(send), Int32(len(send)), right, scratch, Int32(len(recv)), left, handle)
            aet_add_into(buf + lo(recv), scratch, len(recv))
        }
        // All-gather: rank r holds the full sum of chunk (r + 1); pass the sums around.
        for k in 0..<(p - 1) {
            let send = (rank + 1 - k + 2 * p) % p, recv = (rank - k + 2 * p) % p
            _ = aet_mpi_sendrecv_float(buf + lo(send), Int32(len(send)), right, buf + lo(recv), Int32(len(recv)), left, handle)
        }
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
    func keepUntilFinalize(window: MPI_Win?) { state.windows.append(window) }

    /// Marks a collective as pending for the watchdog (`what` names it in the timeout message).
    @inline(__always) func beginCollective(_ what: String) {
        guard state.timeout > 0 else { return }
        state.lock.lock()
        state.op = what
        state.since = state.untimed > 0 ? 0 : now()  // 0: the watchdog does not time it
        state.step = currentStep
        state.lock.unlock()
    }

    /// On ranks other than 0, collectives in `body` wait for rank 0's writing and are not timed.
    public func waitingForRoot<T>(_ body: () throws -> T) rethrows -> T {
        guard rank != 0 else { return try body() }
        state.lock.lock()
        state.untimed += 1
        state.lock.unlock()
        defer {
            state.lock.lock()
            state.untimed -= 1
            state.lock.unlock()
        }
        return try body()
    }

    @inline(__always) func endCollective() {
        guard state.timeout > 0 else { return }
        state.lock.lock()
        state.op = nil
        state.lock.unlock()
    }

    public func allreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_allreduce_float(buf, Int32(count), handle)
    }

    public func allreduceSum(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_allreduce_double(buf, Int32(count), handle)
    }

    public func allreduceMax(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_allreduce_max_double(buf, Int32(count), handle)
    }

    public func startAllreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {
        guard count > 0 else { return }
        if pending == 1024 { waitAll(what: what) }
        _ = aet_mpi_iallreduce_float(buf, Int32(count), requests + pending, handle)
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
            _ = aet_mpi_bcast_bytes(buf + off, Int32(n), Int32(root), handle)
            off += n
        }
    }

    public func barrier(what: String) {
        beginCollective(what); defer { endCollective() }
        _ = aet_mpi_barrier(handle)
    }

    public func abort(code: Int32) -> Never {
        _ = aet_mpi_abort(code)
        exit(code)
    }

    /// Ends MPI for the process (whichever communicator it is called on; `Job` calls it on the
    /// world): the shared windows' epochs first, then MPI_Finalize.
    public func finalize() {
        guard aet_mpi_finalized() == 0 else { return }
        for w in state.windows { _ = aet_mpi_shared_release(w) }
        state.windows = []
        _ = aet_mpi_finalize()
    }
}
