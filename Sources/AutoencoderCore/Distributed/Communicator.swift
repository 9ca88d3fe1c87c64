import CBLAS
import CMPI
import Foundation

/// The only MPI-aware piece of aetrain. `LocalCommunicator` is rank 0 of 1 and does nothing;
/// `MPICommunicator` wraps Open MPI. Everything else calls these few collectives.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// In-place sum over all ranks.
    func allreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String)
    func allreduceSum(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String)
    func allreduceMax(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String)
    /// Starts a non-blocking in-place sum (a gradient bucket); `waitAll` completes every started one.
    func startAllreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String)
    /// Lets started reductions progress (MPI_Test) while computation goes on.
    func progress()
    func waitAll(what: String)
    /// Broadcast `bytes` bytes from `root`.
    func broadcast(_ buf: UnsafeMutableRawPointer, bytes: Int, root: Int, what: String)
    func barrier(what: String)
    /// `floats` floats of memory mapped by every rank (an MPI-3 shared window), or nil when the
    /// ranks do not all share one node. Collective: every rank calls it with the same count;
    /// when the memory cannot be had on any rank, every rank throws.
    func sharedMemory(floats: Int) throws -> UnsafeMutablePointer<Float>?
    /// Orders the shared memory: every rank's writes before the call are visible to every rank
    /// after it (memory barrier, rank barrier, memory barrier).
    func sharedSync(what: String)
    /// Ends every rank of the job now.
    func abort(code: Int32) -> Never
    func finalize()
    /// The training step currently running (for the watchdog's message).
    var currentStep: Int { get set }
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// Agree on failure: every rank passes its own error (or nil); when any rank failed, every
    /// rank throws — the failing rank its own message, the others a message naming that rank.
    /// One small all-reduce, so a bad file on rank 1 never leaves rank 0 waiting elsewhere.
    public func agree(_ error: AETError?, what: String) throws {
        if size == 1 {
            if var error {
                error.allRanks = true
                throw error
            }
            return
        }
        // [any failed, highest exit code, lowest failing rank as size - rank], one max-reduce.
        var v: [Double] = error.map { [1, Double($0.exitCode), Double(size - rank)] } ?? [0, 0, 0]
        allreduceMax(&v, count: 3, what: what)
        if v[0] == 0 { return }
        if var error {
            error.allRanks = true
            throw error
        }
        throw AETError("stopping: rank \(size - Int(v[2])) failed during \(what)", exitCode: Int32(v[1]), allRanks: true)
    }

    public func broadcast(_ array: inout [UInt8], root: Int, what: String) {
        var n = [Double(array.count)]
        if size == 1 { return }
        broadcastDoubles(&n, root: root, what: what)
        if rank != root { array = [UInt8](repeating: 0, count: Int(n[0])) }
        array.withUnsafeMutableBytes { broadcast($0.baseAddress!, bytes: $0.count, root: root, what: what) }
    }

    /// Runs `body`; any error it throws on any rank stops every rank (see `agree`).
    public func collectively<T>(_ what: String, _ body: () throws -> T) throws -> T? {
        var result: T? = nil
        var failure: AETError? = nil
        do { result = try body() } catch let e as AETError { failure = e } catch { failure = AETError("\(what): \(error)") }
        try agree(failure, what: what)
        return result
    }

    public func broadcastDoubles(_ v: inout [Double], root: Int, what: String) {
        v.withUnsafeMutableBytes { broadcast($0.baseAddress!, bytes: $0.count, root: root, what: what) }
    }
}

/// Rank 0 of 1: collectives are no-ops.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var currentStep = 0
    public func allreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {}
    public func allreduceSum(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {}
    public func allreduceMax(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {}
    public func startAllreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {}
    public func progress() {}
    public func waitAll(what: String) {}
    public func broadcast(_ buf: UnsafeMutableRawPointer, bytes: Int, root: Int, what: String) {}
    public func barrier(what: String) {}
    public func sharedMemory(floats: Int) throws -> UnsafeMutablePointer<Float>? { nil }
    public func sharedSync(what: String) {}
    public func abort(code: Int32) -> Never { exit(code) }
    public func finalize() {}
}

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

    @inline(__always) private func enter(_ what: String) {
        guard state.timeout > 0 else { return }
        state.lock.lock()
        state.op = what
        state.since = now()
        state.step = currentStep
        state.lock.unlock()
    }

    @inline(__always) private func leave() {
        guard state.timeout > 0 else { return }
        state.lock.lock()
        state.op = nil
        state.lock.unlock()
    }

    public func allreduceSum(_ buf: UnsafeMutablePointer<Float>, count: Int, what: String) {
        enter(what); defer { leave() }
        _ = aet_mpi_allreduce_float(buf, Int32(count))
    }

    public func allreduceSum(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {
        enter(what); defer { leave() }
        _ = aet_mpi_allreduce_double(buf, Int32(count))
    }

    public func allreduceMax(_ buf: UnsafeMutablePointer<Double>, count: Int, what: String) {
        enter(what); defer { leave() }
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
        enter(what); defer { leave() }
        for i in 0..<pending { _ = aet_mpi_wait(requests + i) }
        pending = 0
    }

    public func broadcast(_ buf: UnsafeMutableRawPointer, bytes: Int, root: Int, what: String) {
        enter(what); defer { leave() }
        var off = 0
        while off < bytes {
            let n = min(bytes - off, 1 << 30)
            _ = aet_mpi_bcast_bytes(buf + off, Int32(n), Int32(root))
            off += n
        }
    }

    public func barrier(what: String) {
        enter(what); defer { leave() }
        _ = aet_mpi_barrier()
    }

    public func sharedMemory(floats: Int) throws -> UnsafeMutablePointer<Float>? {
        guard size > 1, Int(aet_mpi_node_size()) == size else { return nil }
        // Rank 0 creates the window's backing file in osc/sm's directory: check that it has room
        // first, for every rank (Open MPI's osc/sm does not fail collectively: the other ranks
        // would wait forever), then allocate.
        let bytes = floats * 4
        try agree(isRoot ? MPICommunicator.checkBackingDirectory(bytes: bytes) : nil, what: "shared memory set-up")
        var base: UnsafeMutableRawPointer? = nil
        var win: MPI_Win? = nil
        _ = aet_mpi_shared_alloc(bytes, &base, &win)  // MPI errors are fatal: it returns only on success
        windows.append(win)
        return base!.bindMemory(to: Float.self, capacity: floats)
    }

    /// The directory where Open MPI's osc/sm puts shared windows ($OMPI_MCA_osc_sm_backing_directory,
    /// default /dev/shm) must be writable, with room for `bytes` plus 1 MiB.
    static func checkBackingDirectory(bytes: Int, env: [String: String] = ProcessInfo.processInfo.environment) -> AETError? {
        let dir = env["OMPI_MCA_osc_sm_backing_directory"].flatMap { $0.isEmpty ? nil : $0 } ?? "/dev/shm"
        if access(dir, W_OK) != 0 {
            return AETError("shared-memory directory \(dir) is not writable: " + String(cString: strerror(errno)))
        }
        let attributes = try? FileManager.default.attributesOfFileSystem(forPath: dir)
        if let free = (attributes?[.systemFreeSize] as? NSNumber)?.intValue, free < bytes + 1_048_576 {
            let needed: Int = bytes / 1024 + 1024
            return AETError("shared-memory directory \(dir) has \(free / 1024) KiB free, \(needed) KiB needed")
        }
        return nil
    }

    public func sharedSync(what: String) {
        enter(what); defer { leave() }
        _ = aet_mpi_shared_sync(windows.last!)
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

/// Monotonic seconds.
@inline(__always) public func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

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
