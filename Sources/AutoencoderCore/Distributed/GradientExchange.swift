/// One way of summing the ranks' gradients and taking the Adam step from the sum. The trainer
/// calls the same four methods in the same order on every rank, whatever the scheme:
///
///     backward ─ gradientsFinal(from:) ─▶ reduce ─▶ update ─▶ share
///
/// - `reduce` sums every rank's flat gradient buffer together with this rank's contribution to
///   the step's totals (loss sum, sample count, reconstruction and penalty sums, stop and
///   non-finite flags: the extra slots after the gradients) and returns the totals, the same on
///   every rank.
/// - `update` takes this rank's part of the Adam step from the sum (all of it for the
///   all-reduce; one slice for the node-shared exchange, which fuses the sum into the Adam pass).
/// - `share` leaves every rank with the same updated parameters and agrees whether any rank met
///   an Inf/NaN gradient; it runs on every step, also a skipped one.
///
/// An exchange may own the Adam moments' memory (the node-shared one puts them in its window and
/// lends them to `Adam`): checkpoints read and restore them through `Adam.m`/`Adam.v`, and after
/// a resume `shareOptimizerState` brings rank 0's restored moments to every rank that needs them.
///
/// Implementations: `AllReduceExchange` (any cluster; also the single rank, on a
/// `LocalCommunicator`), `NodeSharedExchange` (every rank on one node) and `HierarchicalExchange`
/// (several nodes: shared memory inside a node, a ring all-reduce of each slice across nodes).
/// `chooseGradientExchange` picks one at start-up; nothing else knows which one runs. A new scheme
/// is one new type here, plus its case in `chooseGradientExchange` and `GradientSync`.
public protocol GradientExchange: AnyObject {
    /// How summary.json names this exchange (`grad_sync`): "none" (one rank), "allreduce", "shared",
    /// "hierarchical".
    var name: String { get }
    /// Called by backward as soon as every gradient from `offset` to the end of the parameters is
    /// final (layers finish last first), so reductions can start while backward goes on.
    func gradientsFinal(from offset: Int)
    /// Sums the gradients and the step's totals over the ranks. With `checkFinite`, the totals
    /// also say whether any summed gradient is Inf or NaN (for `--on-nan skip`, decided before
    /// any rank updates).
    func reduce(_ contribution: StepContribution, checkFinite: Bool) -> StepTotals
    /// This rank's part of the Adam step (optimiser step `step`, 0-based) from the summed gradients.
    /// Returns false when it met an Inf/NaN gradient (the update has then been applied with it).
    func update(step: Int) -> Bool
    /// Brings every rank's parameters to the updated values. `updated`: whether `update` ran this
    /// step (false for a skipped step); `finite`: what it returned. Returns false when any rank met
    /// an Inf/NaN gradient (the same answer on every rank).
    func share(step: Int, updated: Bool, finite: Bool) -> Bool
    /// After rank 0 restored a checkpoint into `Adam.m`/`Adam.v`: every rank gets the moments.
    /// Collective.
    func shareOptimizerState()
}

/// What one rank adds to a step's totals: its sums over its slice of the global batch.
public struct StepContribution {
    public var sums: StepSums
    /// Samples in this rank's slice (0 for an empty slice).
    public var samples: Int
    /// This rank received SIGTERM, SIGUSR1 or SIGINT.
    public var stopRequested: Bool

    public init(sums: StepSums, samples: Int, stopRequested: Bool) {
        self.sums = sums
        self.samples = samples
        self.stopRequested = stopRequested
    }
}

/// A step's totals over every rank (the extra slots after the gradients, summed in Float as the
/// gradients are).
public struct StepTotals {
    /// Σ of the per-sample objective, of its reconstruction and penalty (or KL) terms.
    public var lossSum: Double
    public var reconSum: Double
    public var penaltySum: Double
    /// Samples in the global batch.
    public var count: Double
    /// Some rank received a stop signal.
    public var stopRequested: Bool
    /// Some summed gradient is Inf or NaN (only checked when `reduce` was asked to).
    public var nonFiniteGradient: Bool

    /// Mean per-sample objective over the global batch.
    public var loss: Double { lossSum / count }
    /// Whether the step may be applied: a finite loss and, when checked, finite gradients.
    public var isFinite: Bool { loss.isFinite && !nonFiniteGradient }
}

/// The layout of the extra slots after the gradients (`Autoencoder.extraSlots` floats), written by
/// each rank and summed with its gradients.
enum ExtraSlots {
    static let loss = 0, count = 1, recon = 2, penalty = 3, stop = 4, nonFinite = 5

    /// Writes a rank's contribution; the non-finite slot is 0 (an exchange that checks gradients
    /// before the sum sets it).
    @inline(__always) static func write(_ c: StepContribution, to e: UnsafeMutablePointer<Float>) {
        e[loss] = Float(c.sums.loss); e[count] = Float(c.samples); e[recon] = Float(c.sums.recon)
        e[penalty] = Float(c.sums.penalty); e[stop] = c.stopRequested ? 1 : 0
        e[nonFinite] = 0; e[6] = 0; e[7] = 0
    }

    /// Reads summed slots.
    @inline(__always) static func read(_ e: UnsafePointer<Float>) -> StepTotals {
        StepTotals(lossSum: Double(e[loss]), reconSum: Double(e[recon]), penaltySum: Double(e[penalty]),
                   count: Double(e[count]), stopRequested: e[stop] > 0, nonFiniteGradient: e[nonFinite] != 0)
    }
}

/// The exchange `--grad-sync` asks for. `auto`, unless --bucket-size is set: node-shared when
/// every rank is on one node; hierarchical when the ranks span several nodes and some node has
/// more than one rank; the all-reduce when every node has one rank. An explicit mode is used as
/// asked (shared across nodes is a usage error). On one rank: the local communicator's all-reduce,
/// which does nothing. `topology` says which ranks share a node (nil for one rank). Collective.
func chooseGradientExchange(config: TrainConfig, comm: Communicator, model: Autoencoder, adam: Adam,
                            topology: NodeTopology? = nil) throws -> GradientExchange {
    let mode = config.gradientSync ?? .auto
    if let t = topology, let world = comm as? MPICommunicator, mode == .hierarchical || t.nodeCount > 1 {
        switch mode {
        case .shared:
            throw AETError("--grad-sync shared: the \(comm.size) ranks are not all on one node (\(t.describe(worldSize: comm.size)); use auto, hierarchical or allreduce)",
                           exitCode: ExitCode.usage, allRanks: true)
        case .hierarchical:
            return try HierarchicalExchange.make(world: world, topology: t, model: model, adam: adam, required: true)!
        case .auto where config.bucketSizeMB == 0 && t.maxLocalSize > 1:
            if let h = try HierarchicalExchange.make(world: world, topology: t, model: model, adam: adam, required: false) { return h }
        default:
            break
        }
        return AllReduceExchange(config: config, comm: comm, model: model, adam: adam)
    }
    if let shared = try NodeSharedExchange.make(config: config, comm: comm, model: model, adam: adam) { return shared }
    return AllReduceExchange(config: config, comm: comm, model: model, adam: adam)
}
