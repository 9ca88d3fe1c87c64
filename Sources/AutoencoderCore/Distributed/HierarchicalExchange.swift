import CKernels
import Foundation

/// --grad-sync hierarchical: node-shared memory inside a node, the network across nodes (what
/// `auto` picks when the ranks span several nodes and some node has more than one rank).
///
/// The parameters are cut into S slices, S = the most ranks on any node (64-byte aligned bounds,
/// the same on every node). On a node of L ranks, local rank l owns the contiguous run of slices
/// s with ⌊s·L/S⌋ = l (one slice each when L = S; on a smaller node a rank owns several, so the
/// slices line up across uneven nodes). A step:
///
/// 1. reduce: every rank's gradient sits in the node's shared window; after a node barrier each
///    rank sums the node's gradients over its slices (in local rank order), then all-reduces each
///    slice with the owners of that slice on the other nodes (one communicator per slice index,
///    from `MPI_Comm_split`, ranked by node; the ring of `MPICommunicator.ringAllreduceSum`,
///    which allocates nothing). The step's extra slots (loss, count, flags), summed over the
///    node, ride at the end of every slice's message, so every rank gets the global totals
///    without another barrier.
/// 2. update: Adam on its own slices from the global sum, writing the new values to its replica
///    and to the node's published vector (moments in the window: rank 0 reads all of them for a
///    checkpoint, as with `NodeSharedExchange`).
/// 3. share: a node barrier, then every rank copies the node's other slices into its replica.
///
/// Every node computes every slice from the same sum, moments and parameters, so every rank ends
/// the step with the same bits. The sum's order (node by node, then the ring) differs from one
/// rank's, so the result equals one rank's up to float summation order.
///
/// Node window layout: [moments m | moments v | published parameters | flags | gradients of local
/// rank 0 … L−1]. A node of one rank keeps the same layout in its own memory.
final class HierarchicalExchange: GradientExchange {
    let name = "hierarchical"
    let model: Autoencoder
    let adam: Adam
    let topology: NodeTopology
    let memory: NodeMemory
    let localRank: Int
    let localSize: Int
    /// Every local rank's gradient buffer (parameterCount + extra slots), in local rank order.
    let sources: UnsafeMutablePointer<UnsafePointer<Float>?>
    /// The same pointers offset to this rank's slices (for the node sum).
    let sourcesAtOwned: UnsafeMutablePointer<UnsafePointer<Float>?>
    /// This rank's slices with their cross-node communicators (nil when there is one node), in
    /// slice order; `owned` is their union (contiguous).
    let slices: [(range: Range<Int>, peers: MPICommunicator?)]
    let owned: Range<Int>
    /// The node's, then the global, sum of this rank's slices (same offsets as the parameters),
    /// with room for the extra slots after the last one.
    let summed: FloatBuffer
    /// `summed` as Adam's single gradient source.
    let summedSource: UnsafeMutablePointer<UnsafePointer<Float>?>
    /// The ring's receive buffer.
    let scratch: FloatBuffer
    /// The extra slots: summed over the node, saved floats under a message's tail, global sums.
    let nodeExtras = FloatBuffer(Autoencoder.extraSlots)
    let saved = FloatBuffer(Autoencoder.extraSlots)
    let extras = FloatBuffer(Autoencoder.extraSlots)
    let published: UnsafeMutablePointer<Float>
    /// Per-local-rank "my slices saw an Inf/NaN gradient" flags, two sets on alternate steps.
    let flags: UnsafeMutablePointer<Float>

    private init(model: Autoencoder, adam: Adam, topology: NodeTopology, memory: NodeMemory,
                 sources: UnsafeMutablePointer<UnsafePointer<Float>?>, slices: [(range: Range<Int>, peers: MPICommunicator?)],
                 published: UnsafeMutablePointer<Float>, flags: UnsafeMutablePointer<Float>) {
        self.model = model
        self.adam = adam
        self.topology = topology
        self.memory = memory
        localRank = topology.localRank
        localSize = topology.localSize
        self.sources = sources
        self.slices = slices
        owned = (slices.first?.range.lowerBound ?? 0)..<(slices.last?.range.upperBound ?? 0)
        sourcesAtOwned = .allocate(capacity: topology.localSize)
        for q in 0..<topology.localSize { sourcesAtOwned[q] = sources[q]! + owned.lowerBound }
        let E = Autoencoder.extraSlots
        summed = FloatBuffer(model.parameterCount + E)
        summedSource = .allocate(capacity: 1)
        summedSource[0] = UnsafePointer(summed.pointer)
        let longest = slices.map(\.range.count).max() ?? 0
        scratch = FloatBuffer((longest + E) / max(1, topology.nodeCount) + 2)
        self.published = published
        self.flags = flags
    }

    deinit {
        sources.deallocate()
        sourcesAtOwned.deallocate()
        summedSource.deallocate()
    }

    /// Sets the layout up over `topology`'s nodes; moves the model's gradients and Adam's moments
    /// into the node's memory. When a node cannot have its shared window (no room in the
    /// shared-memory directory), every rank learns it: `required` (--grad-sync hierarchical)
    /// stops every rank (exit 6), otherwise every rank gets nil and a warning names the node.
    /// Collective over the world.
    static func make(world: MPICommunicator, topology t: NodeTopology, model: Autoencoder, adam: Adam, required: Bool) throws -> HierarchicalExchange? {
        let P = model.parameterCount, E = Autoencoder.extraSlots
        let L = t.localSize, S = t.maxLocalSize, l = t.localRank
        let pa = (P + 15) & ~15, stride = (P + E + 15) & ~15
        let fl = (2 * L + 15) & ~15
        let g0 = 3 * pa + fl
        var memory: NodeMemory? = nil
        var failure: AETError? = nil
        do { memory = try NodeMemory(floats: g0 + L * stride, node: t.node) } catch let e as AETError { failure = e }
        // Every node must have its memory, or no rank uses this exchange.
        var v = [failure == nil ? 0.0 : 1.0, failure == nil ? 0.0 : Double(world.size - world.rank)]
        world.allreduceMax(&v, count: 2, what: "shared memory set-up")
        if v[0] != 0 {
            let where_ = failure == nil ? " on the node of rank \(world.size - Int(v[1]))" : ""
            let why = failure.map { $0.message } ?? "no shared memory\(where_)"
            if required { throw AETError("--grad-sync hierarchical: " + why, exitCode: ExitCode.distributed, allRanks: true) }
            if failure != nil && t.localRank == 0 || world.rank == 0 {
                printError((world.rank == 0 ? "" : "rank \(world.rank): ") + "warning: \(why); using --grad-sync allreduce (pass --grad-sync hierarchical to stop instead)")
            }
            return nil
        }
        let mem = memory!
        let base = mem.base
        if l == 0 { base.initialize(repeating: 0, count: mem.floats) }
        mem.sync(what: "shared memory set-up")
        adam.rebind(m: FloatBuffer(borrowing: base, count: P), v: FloatBuffer(borrowing: base + pa, count: P))
        model.rebind(grads: FloatBuffer(borrowing: base + g0 + l * stride, count: P + E))
        let sources = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: L)
        for q in 0..<L { sources[q] = UnsafePointer(base + g0 + q * stride) }
        func bound(_ s: Int) -> Int { s >= S ? P : min(P, (s * P / S) & ~15) }
        // One communicator per slice index: the owners of slice s on every node, ranked by node.
        // Every rank takes part in every split (collective), joining the ones of its slices.
        var slices: [(range: Range<Int>, peers: MPICommunicator?)] = []
        for s in 0..<S {
            let mine = s * L / S == l
            let peers = t.nodeCount > 1 ? world.split(color: mine ? s : nil, key: t.nodeIndex) : nil
            if mine { slices.append((bound(s)..<bound(s + 1), peers)) }
        }
        return HierarchicalExchange(model: model, adam: adam, topology: t, memory: mem, sources: sources, slices: slices,
                                    published: base + 2 * pa, flags: base + 3 * pa)
    }

    /// Nothing to start early: the node sum needs every local rank's finished gradient.
    func gradientsFinal(from offset: Int) {}

    func reduce(_ contribution: StepContribution, checkFinite: Bool) -> StepTotals {
        let g = model.grads.pointer, P = model.parameterCount, E = Autoencoder.extraSlots
        ExtraSlots.write(contribution, to: g + P)
        if checkFinite && aet_all_finite(g, P) == 0 { g[P + ExtraSlots.nonFinite] = 1 }
        memory.sync(what: "gradient exchange")
        // The node's sums: the extra slots, and the gradients over this rank's slices.
        let ne = nodeExtras.pointer, e = extras.pointer
        for j in 0..<E {
            var t: Float = 0
            for q in 0..<localSize { t += sources[q]![P + j] }
            ne[j] = t
            e[j] = t
        }
        let sum = summed.pointer
        if !owned.isEmpty { aet_sum_sources(sum + owned.lowerBound, sourcesAtOwned, Int32(localSize), owned.count) }
        // Across nodes: each slice with the node's extra slots after it (the floats there, the
        // head of the next slice, are put back afterwards), so every rank gets the global totals.
        for (range, peers) in slices {
            guard let peers else { continue }
            let tail = sum + range.upperBound
            saved.pointer.update(from: tail, count: E)
            tail.update(from: ne, count: E)
            peers.ringAllreduceSum(sum + range.lowerBound, count: range.count + E, scratch: scratch.pointer, what: "cross-node gradient all-reduce")
            e.update(from: tail, count: E)
            tail.update(from: saved.pointer, count: E)
        }
        return ExtraSlots.read(e)
    }

    /// Adam on this rank's slices from the global sum; the new values go to the replica and the
    /// node's published vector.
    func update(step: Int) -> Bool {
        let finite = adam.update(params: model.params.pointer, gradientSources: summedSource, sourceCount: 1, range: owned,
                                 publish: published)
        flags[(step & 1) * localSize + localRank] = finite ? 0 : 1
        return finite
    }

    /// After the node barrier: the flags of the node's ranks (together they cover every slice,
    /// and every node saw the same sums), then the node's other slices.
    func share(step: Int, updated: Bool, finite: Bool) -> Bool {
        memory.sync(what: "parameter update")
        guard updated else { return true }
        let f = flags + (step & 1) * localSize
        for q in 0..<localSize where f[q] != 0 { return false }
        copyOtherSlices(into: model.params.pointer, from: published, owned: owned, count: model.parameterCount)
        return true
    }

    /// Rank 0 restored the moments into node 0's memory: its leader sends them to the other
    /// nodes' leaders, and a node barrier publishes them on every node.
    func shareOptimizerState() {
        if let leaders = topology.leaders, leaders.size > 1 {
            let P = model.parameterCount
            leaders.broadcast(adam.m.pointer, bytes: P * 4, root: 0, what: "optimizer broadcast")
            leaders.broadcast(adam.v.pointer, bytes: P * 4, root: 0, what: "optimizer broadcast")
        }
        memory.sync(what: "optimizer broadcast")
    }
}
