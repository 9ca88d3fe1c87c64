import Foundation

/// The collectives aetrain needs. `LocalCommunicator` is rank 0 of 1 and does nothing;
/// `MPICommunicator` wraps Open MPI. Everything else calls these few collectives; only
/// `MPICommunicator` and `SharedWindow` (node-shared memory for one exchange) touch MPI.
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
    /// Ends every rank of the job now.
    func abort(code: Int32) -> Never
    func finalize()
    /// The training step currently running (for the watchdog's message).
    var currentStep: Int { get set }
    /// Runs `body`, whose collectives wait for rank 0's own work (writing a checkpoint, the report
    /// or summary.json, reading the resume checkpoint): on the other ranks the collective watchdog
    /// does not count that wait, so a long write is not taken for a stalled rank. Rank 0's own
    /// waits stay timed.
    func waitingForRoot<T>(_ body: () throws -> T) rethrows -> T
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

/// Runs `body` and returns its error as a value (for `Communicator.agree`).
func catching(_ body: () throws -> Void) -> AETError? {
    do { try body(); return nil } catch let e as AETError { return e } catch { return AETError("\(error)") }
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
    public func abort(code: Int32) -> Never { exit(code) }
    public func finalize() {}
    public func waitingForRoot<T>(_ body: () throws -> T) rethrows -> T { try body() }
}
