import CMPI
import Foundation

/// Node-shared memory: one MPI-3 shared window (`MPI_Win_allocate_shared`, Open MPI's osc/sm)
/// that every rank of a communicator maps (the world when it fits on one node, or a
/// `splitByNode()` communicator), for the exchanges that let ranks read each other's buffers
/// where they lie. Only an `MPICommunicator` has one; the window lives until `finalize`.
final class SharedWindow {
    /// The first float of the window (the same memory on every rank).
    let base: UnsafeMutablePointer<Float>
    let floats: Int
    private let window: MPI_Win?
    private unowned let comm: MPICommunicator

    private init(base: UnsafeMutablePointer<Float>, floats: Int, window: MPI_Win?, comm: MPICommunicator) {
        self.base = base
        self.floats = floats
        self.window = window
        self.comm = comm
    }

    /// `floats` floats mapped by every rank of `comm`, or nil when its ranks do not all share one
    /// node. Collective over `comm`: every rank calls it with the same count; when the memory
    /// cannot be had on any rank, every rank throws.
    static func allocate(floats: Int, comm: MPICommunicator) throws -> SharedWindow? {
        guard comm.size > 1, Int(aet_mpi_node_size(comm.handle)) == comm.size else { return nil }
        // Rank 0 creates the window's backing file in osc/sm's directory: check that it has room
        // first, for every rank (Open MPI's osc/sm does not fail collectively: the other ranks
        // would wait forever), then allocate.
        let bytes = floats * 4
        try comm.agree(comm.isRoot ? checkBackingDirectory(bytes: bytes) : nil, what: "shared memory set-up")
        var base: UnsafeMutableRawPointer? = nil
        var win: MPI_Win? = nil
        _ = aet_mpi_shared_alloc(bytes, &base, &win, comm.handle)  // MPI errors are fatal: it returns only on success
        comm.keepUntilFinalize(window: win)
        return SharedWindow(base: base!.bindMemory(to: Float.self, capacity: floats), floats: floats, window: win, comm: comm)
    }

    /// Orders the window: every rank's writes before the call are visible to every rank after it
    /// (memory barrier, rank barrier, memory barrier). Watched by the collective timeout.
    func sync(what: String) {
        comm.beginCollective(what); defer { comm.endCollective() }
        _ = aet_mpi_shared_sync(window, comm.handle)
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
}
