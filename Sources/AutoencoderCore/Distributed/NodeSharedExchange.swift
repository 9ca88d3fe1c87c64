import CKernels
import Foundation

/// --grad-sync shared (ZeRO-1 over node-shared memory). Every rank keeps its own replica of the
/// parameters. Its gradient buffer lives in an MPI shared window, so after a barrier every rank
/// reads every rank's gradient directly. Each rank then owns one slice of the parameters: it
/// sums the gradients over that slice inside the Adam pass (the reduction fused with the
/// update), keeps the Adam moments of that slice only (in the same window, where rank 0 reads
/// all of them for checkpoints) and publishes its new slice; after a second barrier every
/// rank copies the other slices into its replica. Ranks read each other's data where it lies
/// (no copies through message buffers), and Adam's work is divided by the number of ranks.
///
/// Window layout: [moments m | moments v | published parameters | flags | gradients of rank 0 … W−1].
final class NodeSharedExchange: GradientExchange {
    let name = "shared"
    let model: Autoencoder
    let adam: Adam
    let window: SharedWindow
    let rank: Int
    /// Every rank's gradient buffer (parameterCount + extra slots), in rank order.
    let sources: UnsafeMutablePointer<UnsafePointer<Float>?>
    let ranks: Int
    /// The slice of the parameters this rank updates (64-byte aligned boundaries).
    let shard: Range<Int>
    /// The published parameters: each rank writes its slice after its update.
    let published: UnsafeMutablePointer<Float>
    /// Per-rank "my slice saw an Inf/NaN gradient" flags, two sets used on alternate steps (a
    /// rank writes step k's flag while the others may still read step k − 1's).
    let flags: UnsafeMutablePointer<Float>
    /// The extra slots summed over ranks (loss, count, ...), as the all-reduce would leave them.
    let extras = FloatBuffer(Autoencoder.extraSlots)

    private init(model: Autoencoder, adam: Adam, window: SharedWindow, rank: Int, ranks: Int,
                 sources: UnsafeMutablePointer<UnsafePointer<Float>?>, shard: Range<Int>,
                 published: UnsafeMutablePointer<Float>, flags: UnsafeMutablePointer<Float>) {
        self.model = model
        self.adam = adam
        self.window = window
        self.rank = rank
        self.ranks = ranks
        self.sources = sources
        self.shard = shard
        self.published = published
        self.flags = flags
    }

    deinit { sources.deallocate() }

    /// Sets the shared layout up when --grad-sync asks for it (auto: when every rank is on one
    /// node and --bucket-size is not set); nil otherwise. Moves the model's gradients and Adam's
    /// moments into the window. Collective.
    static func make(config: TrainConfig, comm: Communicator, model: Autoencoder, adam: Adam) throws -> NodeSharedExchange? {
        let W = comm.size, r = comm.rank
        let mode = config.gradientSync ?? .auto
        guard W > 1, mode != .allreduce, config.bucketSizeMB == 0 else { return nil }
        let P = model.parameterCount, E = Autoencoder.extraSlots
        let pa = (P + 15) & ~15, stride = (P + E + 15) & ~15
        let fl = (2 * W + 15) & ~15
        let g0 = 3 * pa + fl
        let total = g0 + W * stride
        let allocated: SharedWindow?
        do {
            allocated = try (comm as? MPICommunicator).flatMap { try SharedWindow.allocate(floats: total, comm: $0) }
        } catch let e as AETError {
            if mode == .shared { throw AETError("--grad-sync shared: " + e.message, exitCode: ExitCode.distributed, allRanks: true) }
            if r == 0 { printError("warning: \(e.message); using --grad-sync allreduce (pass --grad-sync shared to stop instead)") }
            return nil
        }
        guard let window = allocated else {
            if mode == .shared {
                throw AETError("--grad-sync shared: the \(W) ranks are not all on one node (use auto or allreduce)", exitCode: ExitCode.usage, allRanks: true)
            }
            return nil
        }
        let base = window.base
        if r == 0 { base.initialize(repeating: 0, count: total) }
        comm.waitingForRoot { window.sync(what: "shared memory set-up") }  // rank 0 zeroing it is not a stall
        adam.rebind(m: FloatBuffer(borrowing: base, count: P), v: FloatBuffer(borrowing: base + pa, count: P))
        model.rebind(grads: FloatBuffer(borrowing: base + g0 + r * stride, count: P + E))
        let sources = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: W)
        for q in 0..<W { sources[q] = UnsafePointer(base + g0 + q * stride) }
        func bound(_ q: Int) -> Int { q >= W ? P : min(P, (q * P / W) & ~15) }
        return NodeSharedExchange(model: model, adam: adam, window: window, rank: r, ranks: W, sources: sources,
                                  shard: bound(r)..<bound(r + 1), published: base + 2 * pa, flags: base + 3 * pa)
    }

    /// Nothing to start early: the sum happens inside the Adam pass.
    func gradientsFinal(from offset: Int) {}

    /// After the barrier every rank's gradient is readable; the extra slots are summed here (in
    /// rank order) and the gradients inside `update`.
    func reduce(_ contribution: StepContribution, checkFinite: Bool) -> StepTotals {
        let g = model.grads.pointer, P = model.parameterCount
        ExtraSlots.write(contribution, to: g + P)
        // Each rank checks its own gradient before the barrier; the flags are summed with the rest.
        if checkFinite && aet_all_finite(g, P) == 0 { g[P + ExtraSlots.nonFinite] = 1 }
        window.sync(what: "gradient exchange")
        let e = extras.pointer
        for j in 0..<Autoencoder.extraSlots {
            var t: Float = 0
            for q in 0..<ranks { t += sources[q]![P + j] }
            e[j] = t
        }
        return ExtraSlots.read(e)
    }

    /// Sum over this rank's slice, Adam, write the slice to the replica and to the published vector.
    func update(step: Int) -> Bool {
        let finite = adam.update(params: model.params.pointer, gradientSources: sources, sourceCount: ranks,
                                 range: shard, publish: published)
        flags[(step & 1) * ranks + rank] = finite ? 0 : 1
        return finite
    }

    /// After the second barrier: the flags of every rank, then the other ranks' slices.
    func share(step: Int, updated: Bool, finite: Bool) -> Bool {
        window.sync(what: "parameter update")
        guard updated else { return true }
        let f = flags + (step & 1) * ranks
        for q in 0..<ranks where f[q] != 0 { return false }
        copyOtherSlices(into: model.params.pointer, from: published, owned: shard, count: model.parameterCount)
        return true
    }

    /// Rank 0 restored the moments into the window: a barrier publishes them.
    func shareOptimizerState() {
        window.sync(what: "optimizer broadcast")
    }
}

/// The node-shared exchanges' last step: every parameter outside this rank's own slice `owned`
/// comes from the node's published vector (the slices the node's other ranks updated).
@inline(__always) func copyOtherSlices(into params: UnsafeMutablePointer<Float>, from published: UnsafeMutablePointer<Float>,
                                       owned: Range<Int>, count P: Int) {
    if owned.lowerBound > 0 { params.update(from: published, count: owned.lowerBound) }
    if owned.upperBound < P { (params + owned.upperBound).update(from: published + owned.upperBound, count: P - owned.upperBound) }
}
