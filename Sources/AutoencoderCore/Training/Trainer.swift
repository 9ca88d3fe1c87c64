import CKernels
import Foundation

/// Where a run stands: what a checkpoint records so that a resume continues the same sequence.
public struct RunPosition: Codable, Equatable, Sendable {
    /// Epoch in progress (0-based) and the next global batch within it.
    public var epoch = 0
    public var batchInEpoch = 0
    /// Optimiser steps taken.
    public var step = 0
    public init() {}
}

/// Seconds per phase, summed over steps.
public struct StepTimers: Sendable {
    public var data = 0.0, forward = 0.0, backward = 0.0, allreduce = 0.0, optimizer = 0.0
    public var steps = 0
}

/// Data-parallel training. Every rank runs this same loop on its slice of each global batch:
///
///     data slice → forward → backward → sum the flat gradients → Adam → rank 0 writes
///
/// The sum is one MPI all-reduce (then every rank takes the whole Adam step), or, with all ranks on
/// one node, the shared exchange of `SharedState` (each rank updates its slice in a fused pass).
///
/// The global batch sequence depends only on the seed, so any world size takes the same steps
/// (up to float summation order), and so does a resumed run.
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let model: Autoencoder
    public let adam: Adam
    public let trainSet: Dataset
    public let testSet: Dataset
    let trainLoader: BatchLoader
    let testLoader: BatchLoader
    public var position = RunPosition()
    var metrics: MetricsWriter?
    let progress = Progress()
    public var checkpoints: Checkpointer?
    /// Seconds spent per phase of the training steps (for the benchmark's breakdown).
    public private(set) var timers = StepTimers()
    /// Figures written into OUT/report/ by the application (anomaly histogram), linked from report.html.
    public var reportExtras: [(file: String, title: String, caption: String)] = []
    /// Called on rank 0 after each epoch evaluation (report-every-epoch).
    public var onEpochEnd: ((Trainer) throws -> Void)?

    public init(config: TrainConfig, comm: Communicator, train: Dataset, test: Dataset) throws {
        self.config = config
        self.comm = comm
        trainSet = train
        testSet = test
        let perRank = (config.batchSize + comm.size - 1) / comm.size
        model = try Autoencoder(spec: config.model, objective: config.objective, maxBatch: perRank, precision: config.precision ?? .f32)
        adam = Adam(count: model.parameterCount, config: config.adam)
        trainLoader = BatchLoader(train, binarize: config.binarize)
        testLoader = BatchLoader(test, binarize: config.binarize)
        shared = try SharedState.make(config: config, comm: comm, model: model, adam: adam)
    }

    let shared: SharedState?
    /// Test hook AETRAIN_TEST_NAN_GRAD="RANK:STEP": that rank's gradient gets a NaN at that step.
    let testNaNGradient: (rank: Int, step: Int)? = {
        guard let s = ProcessInfo.processInfo.environment["AETRAIN_TEST_NAN_GRAD"] else { return nil }
        let f = s.split(separator: ":").compactMap { Int($0) }
        return f.count == 2 ? (f[0], f[1]) : nil
    }()
    /// "shared", "allreduce" or "none" (one rank): how this run sums gradients (summary.json grad_sync).
    public var gradientSyncMode: String { shared != nil ? "shared" : comm.size > 1 ? "allreduce" : "none" }

    var outURL: URL { URL(fileURLWithPath: config.out) }

    /// Fresh parameters: rank 0 initialises and broadcasts (hvd.broadcast_parameters).
    public func initializeParameters() {
        if comm.isRoot { model.initialize(config.initScheme, seed: config.seed) }
        comm.broadcast(model.params.pointer, bytes: model.parameterCount * 4, root: 0, what: "parameter broadcast")
    }

    /// Broadcasts parameters, Adam moments and the position from rank 0 (after a resume).
    public func broadcastState() {
        let P = model.parameterCount
        comm.broadcast(model.params.pointer, bytes: P * 4, root: 0, what: "parameter broadcast")
        if shared != nil {
            comm.sharedSync(what: "optimizer broadcast")  // rank 0 restored the moments into the shared window
        } else {
            comm.broadcast(adam.m.pointer, bytes: P * 4, root: 0, what: "optimizer broadcast")
            comm.broadcast(adam.v.pointer, bytes: P * 4, root: 0, what: "optimizer broadcast")
        }
        var pos = [Double(position.epoch), Double(position.batchInEpoch), Double(position.step), Double(adam.step)]
        comm.broadcastDoubles(&pos, root: 0, what: "position broadcast")
        position.epoch = Int(pos[0]); position.batchInEpoch = Int(pos[1]); position.step = Int(pos[2])
        adam.step = Int(pos[3])
    }

    public func openMetrics(resumedAt step: Int?) throws {
        guard comm.isRoot else { return }
        metrics = try MetricsWriter(path: outURL.appendingPathComponent("metrics.jsonl").path, keepUpToStep: step)
    }

    public var batchesPerEpoch: Int { (trainSet.count + config.batchSize - 1) / config.batchSize }

    /// Rank r's contiguous part [lo, hi) of a global batch of `count` samples.
    @inline(__always) public static func slice(rank: Int, size: Int, count: Int) -> (Int, Int) {
        (rank * count / size, (rank + 1) * count / size)
    }

    /// Trains to the configured epochs / max steps. Returns the summary (on every rank).
    public func run() throws -> [String: Any] {
        let wallStart = now()
        let N = trainSet.count, B = config.batchSize, W = comm.size, r = comm.rank
        let P = model.parameterCount
        let maxSteps = config.maxSteps ?? Int.max
        let perBatch = batchesPerEpoch
        var trainTime = 0.0, trainSamples = 0
        var logTime = 0.0, logSamples = 0
        var epochLossSum = 0.0, epochCount = 0.0
        var lastEval: (mse: Double, bce: Double, pen: Double)? = nil
        var lastEvalStep = -1
        let g = model.grads.pointer
        let bucketFloats = comm.size > 1 ? Int(config.bucketSizeMB * 1_000_000 / 4) : 0
        var perm: [Int32] = []
        var permEpoch = -1

        while position.epoch < config.epochs && position.step < maxSteps {
            if permEpoch != position.epoch {
                perm = Streams.permutation(n: N, seed: config.seed, epoch: position.epoch)
                permEpoch = position.epoch
                epochLossSum = 0; epochCount = 0
            }
            while position.batchInEpoch < perBatch && position.step < maxSteps {
                let t0 = now()
                let step = position.step
                let gStart = position.batchInEpoch * B
                let gCount = min(B, N - gStart)
                let (lo, hi) = Trainer.slice(rank: r, size: W, count: gCount)
                let n = hi - lo
                perm.withUnsafeBufferPointer { p in
                    trainLoader.fill(model.target.pointer, indices: UnsafeBufferPointer(rebasing: p[(gStart + lo)..<(gStart + hi)]))
                }
                if let noise = config.noise {
                    noise.apply(clean: model.target.pointer, noisy: model.input.pointer, count: n, dim: model.inputDim,
                                seed: config.seed, key: step, firstIndex: gStart + lo)
                    model.corrupted = true
                } else {
                    model.corrupted = false
                }
                let t1 = now()
                model.prepareGrads(n)
                model.forward(n, noise: (config.seed, step, gStart + lo))
                comm.currentStep = step + 1
                var t2 = now()
                if model.needsBatchStatistics {
                    model.accumulateCodeStatistics(n)
                    comm.allreduceSum(model.codeStats.pointer, count: model.latent, what: "code statistics all-reduce")
                    let t = now()
                    timers.allreduce += t - t2
                    t2 = t
                }
                // Overlap: with --bucket-size, each bucket of finished gradients (last layers first)
                // starts its non-blocking all-reduce while the backward pass goes on.
                var pendingEnd = P
                let local = model.backward(n, globalCount: gCount, batchTerms: r == 0) { offset in
                    guard bucketFloats > 0 else { return }
                    if pendingEnd - offset >= bucketFloats {
                        comm.startAllreduceSum(g + offset, count: pendingEnd - offset, what: "gradient bucket all-reduce")
                        pendingEnd = offset
                    } else {
                        comm.progress()
                    }
                }
                if let t = testNaNGradient, t.rank == r, t.step == step + 1 { g[P - 1] = .nan }
                let t3 = now()
                // Extra slots ride along in the one gradient all-reduce.
                g[P] = Float(local.loss); g[P + 1] = Float(n); g[P + 2] = Float(local.recon)
                g[P + 3] = Float(local.penalty); g[P + 4] = Signals.pending != 0 ? 1 : 0
                g[P + 5] = 0; g[P + 6] = 0; g[P + 7] = 0
                let sums: UnsafeMutablePointer<Float>  // the extra slots summed over ranks
                // Inf/NaN gradients: with --on-nan skip every rank must know before updating, so the
                // gradient is checked first; with stop (the default) the Adam pass flags them for
                // free and the run stops after the step (nothing is saved from it).
                let precheck = config.onNaN == .skip
                if let shared {
                    // Shared: after the barrier every rank's gradient is readable (see SharedState).
                    g[P + 5] = precheck && !Trainer.allFinite(g, P) ? 1 : 0
                    comm.sharedSync(what: "gradient exchange")
                    sums = shared.sumExtras(at: P)
                } else {
                    if pendingEnd < P {
                        comm.startAllreduceSum(g, count: pendingEnd, what: "gradient bucket all-reduce")
                        comm.startAllreduceSum(g + P, count: Autoencoder.extraSlots, what: "gradient bucket all-reduce")
                        comm.waitAll(what: "gradient bucket all-reduce")
                    } else {
                        comm.allreduceSum(g, count: P + Autoencoder.extraSlots, what: "gradient all-reduce")
                    }
                    sums = g + P
                }
                let t4 = now()
                let count = Double(sums[1])
                let loss = Double(sums[0]) / count
                let finite = loss.isFinite && (!precheck || (shared != nil ? sums[5] == 0 : Trainer.allFinite(g, P)))
                var gradientsFinite = true
                if !finite {
                    if config.onNaN == .stop { throw nonFiniteError(step: step) }
                    if comm.isRoot { printError("warning: non-finite loss or gradient at step \(step + 1); step skipped (--on-nan skip)") }
                } else {
                    if let shared {
                        gradientsFinite = adam.update(params: model.params.pointer, gradientSources: shared.sources, sourceCount: shared.ranks,
                                                      range: shared.shard, publish: shared.published)
                        shared.setFlag(rank: r, step: step, !gradientsFinite)
                    } else {
                        gradientsFinite = adam.update(params: model.params.pointer, grads: g)
                    }
                    epochLossSum += Double(sums[0]); epochCount += count
                }
                let t5 = now()
                var t6 = t5
                if let shared {
                    comm.sharedSync(what: "parameter update")
                    if finite {
                        gradientsFinite = !shared.anyFlagged(step: step)
                        if gradientsFinite { shared.gather(into: model.params.pointer, count: P) }
                    }
                    t6 = now()
                }
                if !gradientsFinite { throw nonFiniteError(step: step) }  // every rank sees the same flags
                timers.data += t1 - t0; timers.forward += t2 - t1; timers.backward += t3 - t2
                timers.allreduce += (t4 - t3) + (t6 - t5); timers.optimizer += t5 - t4; timers.steps += 1
                position.step += 1
                position.batchInEpoch += 1
                let dt = now() - t0
                trainTime += dt; trainSamples += gCount
                logTime += dt; logSamples += gCount
                if comm.isRoot && (position.step % config.logEvery == 0 || position.batchInEpoch == perBatch || position.step == maxSteps) {
                    let rate = Double(logSamples) / max(logTime, 1e-9)
                    var line: [String: Any] = ["step": position.step, "epoch": position.epoch + 1, "loss": loss,
                                               "samples_per_second": rate, "samples": Int(count)]
                    if config.model.variational {
                        line["recon"] = Double(sums[2]) / count
                        line["kl"] = Double(sums[3]) / count
                    } else if config.model.penalty != .none {
                        line["recon"] = Double(sums[2]) / count
                        line["penalty"] = Double(sums[3]) / count
                    }
                    metrics?.write(line)
                    progress.update(epoch: position.epoch + 1, epochs: config.epochs, batch: position.batchInEpoch,
                                    batches: perBatch, step: position.step, loss: loss, rate: rate)
                    logTime = 0; logSamples = 0
                }
                if sums[4] > 0 {
                    progress.endLine()
                    let sig = Signals.pending
                    try checkpoints?.save(self, reason: "preempt")
                    throw AETError("stopped by \(sig != 0 ? Signals.name(sig) : "a signal on another rank") at step \(position.step); checkpoint written, continue with --resume auto",
                                   exitCode: ExitCode.preempted, allRanks: true)
                }
                if config.checkSync > 0 && position.step % config.checkSync == 0 { try checkSync() }
                if config.checkpointEvery > 0 && position.step % config.checkpointEvery == 0 && position.batchInEpoch < perBatch {
                    try checkpoints?.save(self, reason: "step")
                }
            }
            if position.batchInEpoch == perBatch {
                progress.endLine()
                let e = evaluate(testLoader)
                lastEval = e; lastEvalStep = position.step
                position.epoch += 1
                position.batchInEpoch = 0
                if comm.isRoot {
                    var line: [String: Any] = ["epoch": position.epoch, "step": position.step, "test_mse": e.mse, "test_bce": e.bce,
                                               "train_loss": epochCount > 0 ? epochLossSum / epochCount : Double.nan]
                    if config.model.variational { line["test_kl"] = e.pen }
                    metrics?.write(line)
                    printError(String(format: "epoch %d: train loss %.6f  test MSE %.6f  test BCE %.6f",
                                      position.epoch, epochCount > 0 ? epochLossSum / epochCount : .nan, e.mse, e.bce))
                }
                try checkpoints?.save(self, reason: "epoch")
                if comm.isRoot { try onEpochEnd?(self) }
            }
        }
        progress.endLine()
        if let c = checkpoints, c.lastStep != position.step, position.step > 0 { try c.save(self, reason: "final") }
        if lastEvalStep != position.step || lastEval == nil {
            let e = evaluate(testLoader)
            lastEval = e
            if comm.isRoot {
                var line: [String: Any] = ["epoch": position.epoch + (position.batchInEpoch > 0 ? 1 : 0), "step": position.step,
                                           "test_mse": e.mse, "test_bce": e.bce]
                if config.model.variational { line["test_kl"] = e.pen }
                metrics?.write(line)
            }
        }
        metrics?.close()
        let e = lastEval!
        var summary: [String: Any] = [
            "model": config.model.name, "dataset": config.dataset.rawValue, "world_size": W,
            "epochs": config.epochs, "epochs_completed": position.epoch, "steps": position.step,
            "global_batch_size": B, "param_count": P, "grad_sync": gradientSyncMode,
            "train_loss": epochCount > 0 ? epochLossSum / epochCount : Double.nan,
            "test_mse": e.mse, "test_bce": e.bce,
            "samples_per_second": trainSamples > 0 ? Double(trainSamples) / trainTime : 0.0,
            "train_seconds": trainTime, "wall_seconds": now() - wallStart,
            "train_samples": trainSamples, "train_set_size": N, "test_set_size": testSet.count,
            "blas_threads": Threads.blasThreads, "aetrain_version": aetrainVersion,
            "loss": config.objective.loss.rawValue, "latent": model.latent, "precision": model.precision.rawValue,
        ]
        if config.model.variational { summary["test_kl"] = e.pen }
        if timers.steps > 0 {
            let k = 1000 / Double(timers.steps)
            summary["ms_per_step"] = ["data": timers.data * k, "forward": timers.forward * k, "backward": timers.backward * k,
                                      "allreduce": timers.allreduce * k, "optimizer": timers.optimizer * k,
                                      "total": trainTime * k]
            summary["train_gflops"] = Double(model.trainFlopsPerSample) * Double(trainSamples) / max(trainTime, 1e-9) / 1e9
        }
        var rss = [Double](repeating: 0, count: W)
        rss[r] = Trainer.peakRSSMegabytes()
        comm.allreduceSum(&rss, count: W, what: "memory report")
        summary["peak_rss_mb"] = rss.max() ?? 0
        summary["peak_rss_mb_per_rank"] = rss
        if config.model.penalty != .none { summary["penalty"] = config.model.penalty.rawValue }
        if let nz = config.noise { summary["noise"] = nz.description }
        return summary
    }

    public func evaluate(_ loader: BatchLoader) -> (mse: Double, bce: Double, pen: Double) {
        Evaluator.evaluate(model: model, loader: loader, comm: comm)
    }

    func nonFiniteError(step: Int) -> AETError {
        AETError("non-finite loss or gradient at step \(step + 1) (epoch \(position.epoch + 1)); lower --lr, or pass --on-nan skip",
                 exitCode: ExitCode.nonFinite, allRanks: true)
    }

    static func allFinite(_ g: UnsafePointer<Float>, _ n: Int) -> Bool { aet_all_finite(g, n) != 0 }

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
        if let s = ProcessInfo.processInfo.environment["AETRAIN_TEST_PERTURB"], // test hook "rank:step"
           s == "\(comm.rank):\(position.step)" {
            model.params[0] += 1e-3
        }
        let c = parameterChecksum()
        var v = [c, -c]
        comm.allreduceMax(&v, count: 2, what: "check-sync all-reduce")
        if v[0] != -v[1] {
            throw AETError("--check-sync: parameters differ between ranks at step \(position.step)", exitCode: ExitCode.distributed, allRanks: true)
        }
    }
}
