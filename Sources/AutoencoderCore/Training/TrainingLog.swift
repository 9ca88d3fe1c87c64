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
    /// When training started (Trainer.run), and the seconds of the run it resumed (the last
    /// kept metrics line's elapsed_seconds): a line's elapsed_seconds is their sum up to now.
    var started = now()
    var elapsedOffset = 0.0
    var elapsed: Double { elapsedOffset + (now() - started) }

    init(config: TrainConfig, isRoot: Bool, batchesPerEpoch: Int) {
        self.config = config
        self.isRoot = isRoot
        self.batchesPerEpoch = batchesPerEpoch
    }

    /// Mean training loss over the current (or last) epoch's applied steps; NaN when none.
    var epochMeanLoss: Double { epochCount > 0 ? epochLossSum / epochCount : .nan }

    /// Σ loss and Σ count of the current epoch's applied steps: stored in a mid-epoch checkpoint
    /// and restored on resume, so that the epoch's train_loss covers all of its steps.
    var epochLoss: (sum: Double, count: Double) {
        get { (epochLossSum, epochCount) }
        set { (epochLossSum, epochCount) = (newValue.sum, newValue.count) }
    }

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
        line.elapsedSeconds = elapsed
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
    func epochEnded(_ position: RunPosition, evaluation e: (mse: Double, bce: Double, pen: Double),
                    validation v: (mse: Double, bce: Double, pen: Double)? = nil) {
        guard isRoot else { return }
        var line = MetricsLine.Evaluation(epoch: position.epoch, step: position.step, testMSE: e.mse, testBCE: e.bce,
                                          testKL: config.model.variational ? e.pen : nil, trainLoss: epochMeanLoss)
        line.elapsedSeconds = elapsed
        line.valMSE = v?.mse
        line.valBCE = v?.bce
        metrics?.write(line)
        let val = v.map { String(format: "  val MSE %.6f", $0.mse) } ?? ""
        printError(String(format: "epoch %d: train loss %.6f  test MSE %.6f  test BCE %.6f",
                          position.epoch, epochMeanLoss, e.mse, e.bce) + val)
    }

    /// Rank 0: the evaluation line of a run that did not end on an epoch boundary.
    func finalEvaluation(_ position: RunPosition, evaluation e: (mse: Double, bce: Double, pen: Double),
                         validation v: (mse: Double, bce: Double, pen: Double)? = nil) {
        guard isRoot else { return }
        var line = MetricsLine.Evaluation(epoch: position.epoch + (position.batchInEpoch > 0 ? 1 : 0), step: position.step,
                                          testMSE: e.mse, testBCE: e.bce, testKL: config.model.variational ? e.pen : nil)
        line.elapsedSeconds = elapsed
        line.valMSE = v?.mse
        line.valBCE = v?.bce
        metrics?.write(line)
    }

    func endProgressLine() { progress.endLine() }

    func close() { metrics?.close() }
}
