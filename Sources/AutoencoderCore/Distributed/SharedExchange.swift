import Foundation

extension Trainer {
    /// --grad-sync shared (ZeRO-1 over node-shared memory). Every rank keeps its own replica of the
    /// parameters. Its gradient buffer lives in an MPI shared window, so after a barrier every rank
    /// reads every rank's gradient directly. Each rank then owns one slice of the parameters: it
    /// sums the gradients over that slice inside the Adam pass (the reduction fused with the
    /// update), keeps the Adam moments of that slice only (in the same window, where rank 0 reads
    /// all of them for checkpoints) and publishes its new slice; after a second barrier every
    /// rank copies the other slices into its replica. Ranks read each other's data where it lies
    /// (no copies through message buffers), and Adam's work is divided by the number of ranks.
    final class SharedState {
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

        init(sources: UnsafeMutablePointer<UnsafePointer<Float>?>, ranks: Int, shard: Range<Int>, published: UnsafeMutablePointer<Float>,
             flags: UnsafeMutablePointer<Float>) {
            self.sources = sources
            self.ranks = ranks
            self.shard = shard
            self.published = published
            self.flags = flags
        }

        func setFlag(rank: Int, step: Int, _ bad: Bool) { flags[(step & 1) * ranks + rank] = bad ? 1 : 0 }
        /// True when any rank flagged `step` (read after the barrier that follows the update).
        func anyFlagged(step: Int) -> Bool {
            let f = flags + (step & 1) * ranks
            for q in 0..<ranks where f[q] != 0 { return true }
            return false
        }

        deinit { sources.deallocate() }

        /// Sets the shared layout up when --grad-sync asks for it (auto: when every rank is on one
        /// node and --bucket-size is not set). Collective.
        static func make(config: TrainConfig, comm: Communicator, model: Autoencoder, adam: Adam) throws -> SharedState? {
            let W = comm.size, r = comm.rank
            let mode = config.gradientSync ?? .auto
            guard W > 1, mode != .allreduce, config.bucketSizeMB == 0 else { return nil }
            let P = model.parameterCount, E = Autoencoder.extraSlots
            let pa = (P + 15) & ~15, stride = (P + E + 15) & ~15
            // [moments m | moments v | published parameters | flags | gradients of rank 0 ... W-1]
            let fl = (2 * W + 15) & ~15
            let g0 = 3 * pa + fl
            let total = g0 + W * stride
            let window: UnsafeMutablePointer<Float>?
            do {
                window = try comm.sharedMemory(floats: total)
            } catch let e as AETError {
                if mode == .shared { throw AETError("--grad-sync shared: " + e.message, exitCode: ExitCode.distributed, allRanks: true) }
                if r == 0 { printError("warning: \(e.message); using --grad-sync allreduce (pass --grad-sync shared to stop instead)") }
                return nil
            }
            guard let base = window else {
                if mode == .shared {
                    throw AETError("--grad-sync shared: the \(W) ranks are not all on one node (use auto or allreduce)", exitCode: ExitCode.usage, allRanks: true)
                }
                return nil
            }
            if r == 0 { base.initialize(repeating: 0, count: total) }
            comm.sharedSync(what: "shared memory set-up")
            adam.rebind(m: FloatBuffer(borrowing: base, count: P), v: FloatBuffer(borrowing: base + pa, count: P))
            model.rebind(grads: FloatBuffer(borrowing: base + g0 + r * stride, count: P + E))
            let sources = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: W)
            for q in 0..<W { sources[q] = UnsafePointer(base + g0 + q * stride) }
            func bound(_ q: Int) -> Int { q >= W ? P : min(P, (q * P / W) & ~15) }
            return SharedState(sources: sources, ranks: W, shard: bound(r)..<bound(r + 1), published: base + 2 * pa,
                               flags: base + 3 * pa)
        }

        /// Sums the extra slots of every rank's buffer (rank order) into `extras`.
        func sumExtras(at P: Int) -> UnsafeMutablePointer<Float> {
            let e = extras.pointer
            for j in 0..<Autoencoder.extraSlots {
                var t: Float = 0
                for q in 0..<ranks { t += sources[q]![P + j] }
                e[j] = t
            }
            return e
        }

        /// Copies every other rank's published slice into this rank's replica.
        func gather(into params: UnsafeMutablePointer<Float>, count P: Int) {
            if shard.lowerBound > 0 { params.update(from: published, count: shard.lowerBound) }
            if shard.upperBound < P { (params + shard.upperBound).update(from: published + shard.upperBound, count: P - shard.upperBound) }
        }
    }
}
