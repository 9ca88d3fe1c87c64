import CKernels
import Foundation

/// One global batch of the epoch's sample order, and this rank's contiguous slice [lo, hi) of it.
struct GlobalBatch {
    /// The optimiser step it makes (0-based).
    let step: Int
    /// Position in the epoch order of the batch's first sample, and the batch's size.
    let first: Int
    let count: Int
    let lo: Int, hi: Int
    /// Samples on this rank (0 for an empty slice).
    var samples: Int { hi - lo }
    /// Epoch-order index of this rank's first sample: keys its input noise and VAE samples.
    var firstSample: Int { first + lo }
}

/// What one step did, for the parts that watch training (log, preemption, sync check, checkpoints).
struct StepReport {
    /// The position after the step.
    let position: RunPosition
    /// Samples in the global batch.
    let globalCount: Int
    /// Sums over every rank (loss, count, recon, penalty, stop flag).
    let totals: StepTotals
    /// False when --on-nan skip dropped the step.
    let applied: Bool
    let seconds: Double
    /// The learning rate of the step.
    let lr: Double
}

/// Data-parallel training. Every rank runs the same loop on its slice of each global batch:
///
///     load → forward → backward → exchange: reduce → update → exchange: share → observe
///
/// The parts own their state: the model its buffers, the `GradientExchange` how gradients are
/// summed and the update taken (chosen once at start-up), the `TrainingLog` what rank 0 reports,
/// the `Checkpointer` the files. The global batch sequence depends only on the seed, so any world
/// size takes the same steps (up to float summation order), and so does a resumed run.
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let model: Autoencoder
    public let adam: Adam
    public let trainSet: Dataset
    public let testSet: Dataset
    /// The held-out end of the training set (--val-split), evaluated with the test split.
    public let validationSet: Dataset?
    let trainLoader: BatchLoader
    let testLoader: BatchLoader
    let validationLoader: BatchLoader?
    /// --keep-best / --early-stop: watches every evaluation (nil without them).
    public let selector: ModelSelector?
    /// How gradients are summed and the update taken (chosen once, never branched on).
    let exchange: GradientExchange
    /// Metrics lines, progress, throughput and time per phase (rank 0 writes).
    let log: TrainingLog
    /// Test hooks (a production run has none).
    let faults: FaultInjection
    /// Which ranks share a node (nil for one rank).
    let topology: NodeTopology?
    /// The learning rate of each step (--lr-schedule, --warmup-steps, --scale-lr).
    public let learningRate: LearningRate
    public var position = RunPosition()
    public var checkpoints: Checkpointer?
    /// Figures written into OUT/report/ by the application (anomaly histogram), linked from report.html.
    public var reportExtras: [(file: String, title: String, caption: String)] = []
    /// Called on rank 0 after each epoch evaluation (report-every-epoch).
    public var onEpochEnd: ((Trainer) throws -> Void)?
    /// The epoch's sample order (the same on every rank).
    private var order: [Int32] = []
    /// The last evaluation of the test split and the step it was made at.
    private var lastEvaluation: (result: (mse: Double, bce: Double, pen: Double), step: Int)?
    private var lastValidation: (mse: Double, bce: Double, pen: Double)?

    /// `topology`: which ranks share a node (`NodeTopology.make`; nil for one rank), for the
    /// exchange's choice.
    public init(config: TrainConfig, comm: Communicator, train: Dataset, test: Dataset, validation: Dataset? = nil,
                faults: FaultInjection = .current, topology: NodeTopology? = nil) throws {
        self.config = config
        self.faults = faults
        self.topology = topology
        self.comm = comm
        trainSet = train
        testSet = test
        let perRank = (config.batchSize + comm.size - 1) / comm.size
        model = try Autoencoder(spec: config.model, objective: config.objective, maxBatch: perRank, precision: config.precision ?? .f32)
        adam = Adam(count: model.parameterCount, config: config.adam)
        trainLoader = BatchLoader(train, binarize: config.binarize)
        testLoader = BatchLoader(test, binarize: config.binarize)
        validationSet = validation
        validationLoader = validation.map { BatchLoader($0, binarize: config.binarize) }
        selector = config.selection.map { ModelSelector($0, out: config.out) }
        exchange = try chooseGradientExchange(config: config, comm: comm, model: model, adam: adam, topology: topology)
        let perEpoch = (train.count + config.batchSize - 1) / config.batchSize
        log = TrainingLog(config: config, isRoot: comm.isRoot, batchesPerEpoch: perEpoch)
        let (total, overflow) = config.epochs.multipliedReportingOverflow(by: perEpoch)
        learningRate = LearningRate(lr: config.adam.lr, schedule: config.lrSchedule, globalBatch: config.batchSize,
                                    totalSteps: min(overflow ? Int.max : total, config.maxSteps ?? Int.max))
    }

    /// "shared", "hierarchical", "allreduce" or "none" (one rank): how this run sums gradients
    /// (summary.json grad_sync).
    public var gradientSyncMode: String { exchange.name }
    /// Seconds spent per phase of the training steps (for the benchmark's breakdown).
    public var timers: StepTimers { log.timers }
    public var batchesPerEpoch: Int { (trainSet.count + config.batchSize - 1) / config.batchSize }
    var maxSteps: Int { config.maxSteps ?? Int.max }
    /// Early stopping ended the run.
    var stoppedEarly: Bool { selector?.stopped ?? false }

    // MARK: the loop

    /// Trains to the configured epochs / max steps. Returns the summary (on every rank).
    public func run() throws -> RunSummary {
        let wallStart = now()
        log.started = wallStart
        while position.epoch < config.epochs && position.step < maxSteps && !stoppedEarly {
            beginEpoch()
            while position.batchInEpoch < batchesPerEpoch && position.step < maxSteps {
                let report = try step(nextBatch())
                try observe(report)
            }
            if position.batchInEpoch >= batchesPerEpoch { try endEpoch() }
        }
        return try finish(wallStart: wallStart)
    }

    /// One optimiser step, the same on every rank. Each phase is one call into the part that owns
    /// its state; the clock only attributes time to phases.
    func step(_ b: GlobalBatch) throws -> StepReport {
        var clock = PhaseClock()
        comm.currentStep = b.step + 1
        load(b)
        log.timers.data += clock.lap()
        forward(b)
        log.timers.forward += clock.lap()
        shareBatchStatistics(b)
        log.timers.exchange += clock.lap()
        let mine = backward(b)
        log.timers.backward += clock.lap()
        let totals = exchange.reduce(mine, checkFinite: config.onNaN == .skip)
        log.timers.exchange += clock.lap()
        // A non-finite loss or (checked) gradient: --on-nan stop ends the run, skip drops the step.
        let apply = totals.isFinite
        if !apply && config.onNaN == .stop { throw nonFiniteError(step: b.step) }
        adam.config.lr = learningRate.at(step: b.step)
        let finite = apply ? exchange.update(step: b.step) : true
        log.timers.optimizer += clock.lap()
        let agreed = exchange.share(step: b.step, updated: apply, finite: finite)
        log.timers.exchange += clock.lap()
        if !agreed { throw nonFiniteError(step: b.step) }  // every rank gets the same answer
        position.step += 1
        position.batchInEpoch += 1
        return StepReport(position: position, globalCount: b.count, totals: totals, applied: apply, seconds: clock.elapsed,
                          lr: adam.config.lr)
    }

    /// After each step: the log (metrics line, progress), preemption, the sync check and the
    /// checkpoint cadence. Every rank calls it; what only rank 0 does is decided inside.
    func observe(_ r: StepReport) throws {
        log.stepEnded(r)
        if r.totals.stopRequested {
            // On the epoch's last step the epoch ends first (evaluation, epoch checkpoint), so that
            // no checkpoint records batch_in_epoch = batches per epoch.
            if position.batchInEpoch >= batchesPerEpoch { try endEpoch() }
            try stopForSignal()
        }
        if config.checkSync > 0 && position.step % config.checkSync == 0 { try checkSync() }
        if config.checkpointEvery > 0 && position.step % config.checkpointEvery == 0 && position.batchInEpoch < batchesPerEpoch {
            try checkpoints?.save(self, reason: "step")
        }
    }

    // MARK: the phases

    /// The epoch's sample order: the same seeded permutation on every rank. The epoch's running
    /// loss starts at zero unless a resume restored it mid-epoch.
    func beginEpoch() {
        order = Streams.permutation(n: trainSet.count, seed: config.seed, epoch: position.epoch)
        if position.batchInEpoch == 0 { log.epochBegan() }
    }

    /// The global batch at the current position, and this rank's slice of it.
    func nextBatch() -> GlobalBatch {
        let first = position.batchInEpoch * config.batchSize
        let count = min(config.batchSize, trainSet.count - first)
        let (lo, hi) = Trainer.slice(rank: comm.rank, size: comm.size, count: count)
        return GlobalBatch(step: position.step, first: first, count: count, lo: lo, hi: hi)
    }

    /// load: this rank's samples into the model's target (and a corrupted copy into its input
    /// for denoising, keyed by seed, step and sample).
    func load(_ b: GlobalBatch) {
        order.withUnsafeBufferPointer { p in
            trainLoader.fill(model.target.pointer, indices: UnsafeBufferPointer(rebasing: p[(b.first + b.lo)..<(b.first + b.hi)]))
        }
        if let noise = config.noise {
            noise.apply(clean: model.target.pointer, noisy: model.input.pointer, count: b.samples, dim: model.inputDim,
                        seed: config.seed, key: b.step, firstIndex: b.firstSample)
            model.corrupted = true
        } else {
            model.corrupted = false
        }
    }

    /// forward: the model on this rank's samples (VAE ε keyed by seed, step and sample).
    func forward(_ b: GlobalBatch) {
        model.prepareGrads(b.samples)
        model.forward(b.samples, noise: (config.seed, b.step, b.firstSample))
    }

    /// sparse-kl only: the code's column sums over the whole global batch (its ρ̂), before backward.
    func shareBatchStatistics(_ b: GlobalBatch) {
        guard model.needsBatchStatistics else { return }
        model.accumulateCodeStatistics(b.samples)
        comm.allreduceSum(model.codeStats.pointer, count: model.latent, what: "code statistics all-reduce")
    }

    /// backward: this rank's gradients, already divided by the global count; the exchange may
    /// start reducing finished buckets meanwhile. Returns this rank's part of the step's totals.
    func backward(_ b: GlobalBatch) -> StepContribution {
        let sums = model.backward(b.samples, globalCount: b.count, batchTerms: comm.rank == 0) { exchange.gradientsFinal(from: $0) }
        if faults.nanGradient == .init(rank: comm.rank, step: b.step + 1) { model.grads[model.parameterCount - 1] = .nan }
        return StepContribution(sums: sums, samples: b.samples, stopRequested: Signals.pending != 0)
    }

    // MARK: what happens between steps

    /// Some rank received SIGTERM, SIGUSR1 or SIGINT: checkpoint this step and stop (exit 75).
    func stopForSignal() throws {
        log.endProgressLine()
        let sig = Signals.pending
        // Unless the epoch end just wrote (and every rank agreed on) this step's checkpoint.
        if let c = checkpoints, c.lastStep != position.step || config.onCheckpointError == .continue {
            try c.save(self, reason: "preempt")
        }
        throw AETError("stopped by \(sig != 0 ? Signals.name(sig) : "a signal on another rank") at step \(position.step); checkpoint written, continue with --resume auto",
                       exitCode: ExitCode.preempted, allRanks: true)
    }

    /// The epoch is done: evaluate the test (and validation) split, log it, let the selector
    /// see it, checkpoint, run the epoch hook.
    func endEpoch() throws {
        log.endProgressLine()
        let e = evaluate(testLoader)
        let v = validationLoader.map(evaluate)
        lastEvaluation = (e, position.step)
        lastValidation = v
        position.epoch += 1
        position.batchInEpoch = 0
        log.epochEnded(position, evaluation: e, validation: v)
        try selector?.evaluated(EvaluationRecord(step: position.step, epoch: position.epoch, atEpochEnd: true, test: e,
                                                 validation: v, trainLoss: log.epochMeanLoss), trainer: self)
        try checkpoints?.save(self, reason: "epoch")
        // Rank 0's epoch hook (the report) while the others wait, untimed: writing is not a stall.
        if config.reportEveryEpoch && config.report {
            try comm.waitingForRoot {
                try comm.agree(comm.isRoot ? catching { try onEpochEnd?(self) } : nil, what: "epoch report")
            }
        } else if comm.isRoot {
            try onEpochEnd?(self)
        }
    }

    /// After the last step: a final checkpoint and evaluation when the last epoch end did not
    /// make them, then the summary.
    func finish(wallStart: Double) throws -> RunSummary {
        log.endProgressLine()
        // The evaluation first, so that the final checkpoint carries the selector's last state.
        if lastEvaluation?.step != position.step {
            let e = evaluate(testLoader)
            let v = validationLoader.map(evaluate)
            lastEvaluation = (e, position.step)
            lastValidation = v
            log.finalEvaluation(position, evaluation: e, validation: v)
            try selector?.evaluated(EvaluationRecord(step: position.step, epoch: position.epoch + (position.batchInEpoch > 0 ? 1 : 0),
                                                     atEpochEnd: false, test: e, validation: v), trainer: self)
        }
        if let c = checkpoints, c.lastStep != position.step, position.step > 0 { try c.save(self, reason: "final") }
        log.close()
        return summary(evaluation: lastEvaluation!.result, wallStart: wallStart)
    }

    /// The run's summary (every rank; the memory figures are gathered from every rank).
    func summary(evaluation e: (mse: Double, bce: Double, pen: Double), wallStart: Double) -> RunSummary {
        let trainTime = log.trainSeconds, trainSamples = log.trainSamples
        var s = RunSummary(model: config.model.name)
        s.dataset = config.dataset.rawValue
        s.worldSize = comm.size
        s.epochs = config.epochs
        s.epochsCompleted = position.epoch
        s.steps = position.step
        s.globalBatchSize = config.batchSize
        s.paramCount = model.parameterCount
        s.gradSync = gradientSyncMode
        s.trainLoss = log.epochMeanLoss
        s.testMSE = e.mse
        s.testBCE = e.bce
        s.samplesPerSecond = trainSamples > 0 ? Double(trainSamples) / trainTime : 0.0
        s.trainSeconds = trainTime
        s.wallSeconds = now() - wallStart
        s.trainSamples = trainSamples
        s.trainSetSize = trainSet.count
        s.testSetSize = testSet.count
        s.blasThreads = Threads.blasThreads
        s.computePrecision = model.precision.rawValue
        s.aetrainVersion = aetrainVersion
        s.loss = config.objective.loss.rawValue
        s.latent = model.latent
        if config.model.variational { s.testKL = e.pen }
        let timers = log.timers
        if timers.steps > 0 {
            let k = 1000 / Double(timers.steps)
            s.msPerStep = .init(data: timers.data * k, forward: timers.forward * k, backward: timers.backward * k,
                                allreduce: timers.exchange * k, optimizer: timers.optimizer * k, total: trainTime * k)
            s.trainGflops = Double(model.trainFlopsPerSample) * Double(trainSamples) / max(trainTime, 1e-9) / 1e9
        }
        // Every rank's peak RSS and PSS, and its data copy (a node's shared one counts once).
        let W = comm.size
        var mem = [Double](repeating: 0, count: 2 * W + 1)
        mem[comm.rank] = Trainer.peakRSSMegabytes()
        mem[W + comm.rank] = Trainer.proportionalSetMegabytes() ?? .nan
        mem[2 * W] = trainSet.isNodeShared && (topology?.localRank ?? 0) != 0 ? 0 : 1
        comm.allreduceSum(&mem, count: mem.count, what: "memory report")
        let rss = Array(mem[0..<W])
        s.peakRssMb = rss.max() ?? 0
        s.peakRssMbPerRank = rss
        let pss = Array(mem[W..<(2 * W)])
        if pss.allSatisfy(\.isFinite) { s.pssMbPerRank = pss }
        s.dataCopies = Int(mem[2 * W])
        s.nodes = topology?.nodeCount
        if config.model.penalty != .none { s.penalty = config.model.penalty.rawValue }
        if let nz = config.noise { s.noise = nz.description }
        s.stopReason = stoppedEarly ? "early_stop" : position.epoch >= config.epochs ? "epochs" : "max_steps"
        if let v = validationSet { s.valSetSize = v.count }
        if let v = lastValidation { s.valMSE = v.mse; s.valBCE = v.bce }
        selector?.fill(&s)
        return s
    }

    // MARK: start-up and checks

    /// Fresh parameters: rank 0 initialises and broadcasts (hvd.broadcast_parameters).
    public func initializeParameters() {
        if comm.isRoot { model.initialize(config.initScheme, seed: config.seed) }
        comm.waitingForRoot {  // rank 0 initialising them is not a stall
            comm.broadcast(model.params.pointer, bytes: model.parameterCount * 4, root: 0, what: "parameter broadcast")
        }
    }

    /// Broadcasts parameters, Adam moments, the position and the epoch's running loss from rank 0
    /// (after a resume).
    public func broadcastState() {
        comm.broadcast(model.params.pointer, bytes: model.parameterCount * 4, root: 0, what: "parameter broadcast")
        exchange.shareOptimizerState()
        let loss = log.epochLoss
        var pos = [Double(position.epoch), Double(position.batchInEpoch), Double(position.step), Double(adam.step), loss.sum, loss.count]
        comm.broadcastDoubles(&pos, root: 0, what: "position broadcast")
        position.epoch = Int(pos[0]); position.batchInEpoch = Int(pos[1]); position.step = Int(pos[2])
        adam.step = Int(pos[3])
        log.epochLoss = (pos[4], pos[5])
    }

    /// A resumed position on this run's epoch geometry. The checkpoint counted `batchInEpoch`
    /// batches of `checkpointBatchSize`; this run's epoch has `batchesPerEpoch` batches of
    /// --batch-size over `trainSet.count` images. Same batch size and a batch that exists: kept
    /// as it is (a bit-exact resume). Otherwise the samples consumed in the epoch pick the batch
    /// (rounded down: none of the epoch's samples is skipped); past this run's epoch, the next
    /// epoch begins. Returns the position and, when it changed, one line saying so.
    func mapOntoEpoch(_ p: RunPosition, checkpointBatchSize: Int) -> (position: RunPosition, note: String?) {
        if checkpointBatchSize == config.batchSize && p.batchInEpoch < batchesPerEpoch { return (p, nil) }
        let consumed = p.batchInEpoch * checkpointBatchSize
        var q = p
        let was = "the checkpoint is \(consumed) samples into epoch \(p.epoch + 1) (batch \(p.batchInEpoch) at batch size \(checkpointBatchSize))"
        if consumed >= trainSet.count {
            q.epoch += 1
            q.batchInEpoch = 0
            return (q, "resume: \(was), past the end of this run's epoch of \(trainSet.count) images; epoch \(p.epoch + 1) counts as done (no evaluation line) and epoch \(q.epoch + 1) begins")
        }
        q.batchInEpoch = consumed / config.batchSize
        return (q, "resume: \(was); at batch size \(config.batchSize) epoch \(p.epoch + 1) continues at batch \(q.batchInEpoch) of \(batchesPerEpoch)")
    }

    public func openMetrics(resumedAt step: Int?) throws {
        guard comm.isRoot else { return }
        log.metrics = try MetricsWriter(path: URL(fileURLWithPath: config.out).appendingPathComponent("metrics.jsonl").path,
                                        keepUpToStep: step)
        if let m = log.metrics, step != nil { log.elapsedOffset = RunHistory.lastElapsed(metrics: m.path) }
    }

    /// Rank r's contiguous part [lo, hi) of a global batch of `count` samples.
    @inline(__always) public static func slice(rank: Int, size: Int, count: Int) -> (Int, Int) {
        (rank * count / size, (rank + 1) * count / size)
    }

    public func evaluate(_ loader: BatchLoader) -> (mse: Double, bce: Double, pen: Double) {
        Inference.evaluate(model: model, loader: loader, comm: comm)
    }

    func nonFiniteError(step: Int) -> AETError {
        AETError("non-finite loss or gradient at step \(step + 1) (epoch \(position.epoch + 1)); lower --lr, or pass --on-nan skip",
                 exitCode: ExitCode.nonFinite, allRanks: true)
    }

    static func allFinite(_ g: UnsafePointer<Float>, _ n: Int) -> Bool { aet_all_finite(g, n) != 0 }

    /// This process's proportional set size now (Linux /proc/self/smaps_rollup `Pss:`, in kB), or nil.
    public static func proportionalSetMegabytes() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Pss:") }),
              let kb = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return nil }
        return kb / 1024
    }

    /// Peak resident set size of this process (getrusage ru_maxrss, KiB on Linux).
    public static func peakRSSMegabytes() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_maxrss) / 1024
    }

    /// FNV-1a over the parameter bytes, folded to 52 bits so it travels exactly as a Double.
    public func parameterChecksum() -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let bytes = UnsafeRawPointer(model.params.pointer).assumingMemoryBound(to: UInt8.self)
        for i in 0..<(model.parameterCount * 4) {
            h ^= UInt64(bytes[i])
            h = h &* 0x100_0000_01b3
        }
        return Double(h & ((1 << 52) - 1))
    }

    /// --check-sync: compares the parameter checksum across ranks; stops on drift.
    func checkSync() throws {
        if faults.perturbParameters == .init(rank: comm.rank, step: position.step) { model.params[0] += 1e-3 }
        let c = parameterChecksum()
        var v = [c, -c]
        comm.allreduceMax(&v, count: 2, what: "check-sync all-reduce")
        if v[0] != -v[1] {
            throw AETError("--check-sync: parameters differ between ranks at step \(position.step)", exitCode: ExitCode.distributed, allRanks: true)
        }
    }
}
