import Foundation

/// Seconds per phase of the training steps, summed over steps (summary.json `ms_per_step`).
public struct StepTimers: Sendable {
    public var data = 0.0, forward = 0.0, backward = 0.0, optimizer = 0.0
    /// Gradient exchange and other collectives of the step (summary key `allreduce`).
    public var exchange = 0.0
    public var steps = 0
}

/// What training reports as it goes: every rank keeps the running figures the summary needs
/// (throughput, the epoch's mean loss, time per phase); rank 0 alone writes the metrics.jsonl
/// lines and the progress display. Lines are built only when they are written.
final class TrainingLog {
    let config: TrainConfig
    let isRoot: Bool
    let batchesPerEpoch: Int
    var metrics: MetricsWriter?
    let progress = Progress()
    var timers = StepTimers()
    /// Training time and samples (evaluation excluded), in total and since the last logged line.
    private(set) var trainSeconds = 0.0, trainSamples = 0
    private var logSeconds = 0.0, logSamples = 0
    /// Σ loss and Σ count over the applied steps of the current epoch.
    private var epochLossSum = 0.0, epochCount = 0.0

    init(config: TrainConfig, isRoot: Bool, batchesPerEpoch: Int) {
        self.config = config
        self.isRoot = isRoot
        self.batchesPerEpoch = batchesPerEpoch
    }

    /// Mean training loss over the current (or last) epoch's applied steps; NaN when none.
    var epochMeanLoss: Double { epochCount > 0 ? epochLossSum / epochCount : .nan }

    func epochBegan() {
        epochLossSum = 0
        epochCount = 0
    }

    /// Counts the step; on rank 0 writes its metrics line and progress every --log-every steps,
    /// at the epoch's last batch and at the last step.
    func stepEnded(_ r: StepReport) {
        timers.steps += 1
        trainSeconds += r.seconds; trainSamples += r.globalCount
        logSeconds += r.seconds; logSamples += r.globalCount
        let t = r.totals, p = r.position
        if r.applied {
            epochLossSum += t.lossSum
            epochCount += t.count
        } else if isRoot {
            printError("warning: non-finite loss or gradient at step \(p.step); step skipped (--on-nan skip)")
        }
        guard isRoot && (p.step % config.logEvery == 0 || p.batchInEpoch == batchesPerEpoch || p.step == (config.maxSteps ?? Int.max)) else { return }
        let rate = Double(logSamples) / max(logSeconds, 1e-9)
        var line = MetricsLine.Step(step: p.step, epoch: p.epoch + 1, loss: t.loss, samplesPerSecond: rate, samples: Int(t.count), lr: r.lr)
        if config.model.variational {
            line.recon = t.reconSum / t.count
            line.kl = t.penaltySum / t.count
        } else if config.model.penalty != .none {
            line.recon = t.reconSum / t.count
            line.penalty = t.penaltySum / t.count
        }
        metrics?.write(line)
        progress.update(epoch: p.epoch + 1, epochs: config.epochs, batch: p.batchInEpoch,
                        batches: batchesPerEpoch, step: p.step, loss: t.loss, rate: rate)
        logSeconds = 0
        logSamples = 0
    }

    /// Rank 0: the epoch's evaluation line and its console line (`position` is after the epoch).
    func epochEnded(_ position: RunPosition, evaluation e: (mse: Double, bce: Double, pen: Double)) {
        guard isRoot else { return }
        metrics?.write(MetricsLine.Evaluation(epoch: position.epoch, step: position.step, testMSE: e.mse, testBCE: e.bce,
                                              testKL: config.model.variational ? e.pen : nil, trainLoss: epochMeanLoss))
        printError(String(format: "epoch %d: train loss %.6f  test MSE %.6f  test BCE %.6f",
                          position.epoch, epochMeanLoss, e.mse, e.bce))
    }

    /// Rank 0: the evaluation line of a run that did not end on an epoch boundary.
    func finalEvaluation(_ position: RunPosition, evaluation e: (mse: Double, bce: Double, pen: Double)) {
        guard isRoot else { return }
        metrics?.write(MetricsLine.Evaluation(epoch: position.epoch + (position.batchInEpoch > 0 ? 1 : 0), step: position.step,
                                              testMSE: e.mse, testBCE: e.bce, testKL: config.model.variational ? e.pen : nil))
    }

    func endProgressLine() { progress.endLine() }

    func close() { metrics?.close() }
}
