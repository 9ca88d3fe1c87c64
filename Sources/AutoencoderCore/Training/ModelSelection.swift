import Foundation

/// The value a run is judged by at each evaluation (always minimised): `--monitor`.
public enum MonitorKey: String, Codable, CaseIterable, Sendable {
    case testMSE = "test_mse", testBCE = "test_bce", valMSE = "val_mse", valBCE = "val_bce", trainLoss = "train_loss"

    /// The split the value is measured on: "test", "validation" or "train" (summary.json `monitor_split`).
    public var split: String {
        switch self {
        case .testMSE, .testBCE: return "test"
        case .valMSE, .valBCE: return "validation"
        case .trainLoss: return "train"
        }
    }
}

/// `--early-stop PATIENCE[:MIN_DELTA]` (Keras EarlyStopping, mode min): stop after PATIENCE
/// evaluations in a row that did not improve on the best by more than MIN_DELTA.
public struct EarlyStop: Codable, Equatable, Sendable, CustomStringConvertible {
    public var patience: Int
    public var minDelta: Double

    public init(patience: Int, minDelta: Double = 0) {
        self.patience = patience
        self.minDelta = minDelta
    }

    /// Parses `PATIENCE[:MIN_DELTA]`; the error names the flag.
    public init(parsing s: String) throws {
        let parts = s.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let p = Int(parts[0]), p >= 1, p <= 1_000_000_000 else {
            throw AETError.usage("--early-stop \(s): expected PATIENCE[:MIN_DELTA] with PATIENCE a whole number ≥ 1, e.g. 3 or 3:0.0001")
        }
        var d = 0.0
        if parts.count == 2 {
            guard let v = Double(parts[1]), v.isFinite, v >= 0 else {
                throw AETError.usage("--early-stop \(s): MIN_DELTA must be a finite number ≥ 0, e.g. 3:0.0001")
            }
            d = v
        }
        self.init(patience: p, minDelta: d)
    }

    public var description: String { minDelta == 0 ? "\(patience)" : "\(patience):\(minDelta)" }
}

/// What picks the model a run hands over: `--keep-best`, `--monitor`, `--early-stop`,
/// `--val-split` (TrainConfig.selection; nil when none of them is given).
public struct ModelSelection: Codable, Equatable, Sendable {
    public var keepBest: Bool = false
    public var monitor: MonitorKey = .testMSE
    public var earlyStop: EarlyStop? = nil
    /// The fraction of the training set (after --train-limit) held out, from its end.
    public var valSplit: Double? = nil

    public init(keepBest: Bool = false, monitor: MonitorKey = .testMSE, earlyStop: EarlyStop? = nil, valSplit: Double? = nil) {
        self.keepBest = keepBest
        self.monitor = monitor
        self.earlyStop = earlyStop
        self.valSplit = valSplit
    }

    /// The resolved selection for these flags: nil when none is given; the monitor defaults to
    /// val_mse with a validation split, else test_mse.
    public static func resolve(keepBest: Bool, monitor: MonitorKey?, earlyStop: String?, valSplit: Double?) throws -> ModelSelection? {
        guard keepBest || monitor != nil || earlyStop != nil || valSplit != nil else { return nil }
        var s = ModelSelection(keepBest: keepBest)
        s.earlyStop = try earlyStop.map(EarlyStop.init(parsing:))
        s.valSplit = valSplit
        s.monitor = monitor ?? (valSplit != nil ? .valMSE : .testMSE)
        try s.validate()
        return s
    }

    public func validate() throws {
        if let f = valSplit, !(f > 0 && f < 1) {
            throw AETError.usage("--val-split \(f): must be a fraction in (0, 1), e.g. 0.1")
        }
        if monitor.split == "validation" && valSplit == nil {
            throw AETError.usage("--monitor \(monitor.rawValue): needs a validation split (--val-split F, e.g. 0.1)")
        }
        if let e = earlyStop, !(e.patience >= 1 && e.minDelta.isFinite && e.minDelta >= 0) {
            throw AETError.usage("--early-stop \(e): PATIENCE must be ≥ 1 and MIN_DELTA a finite number ≥ 0")
        }
    }

    /// Images held out of `n` training images by --val-split (the last ones); at least one on
    /// each side, else a usage error naming the flag.
    public static func validationCount(_ fraction: Double?, of n: Int) throws -> Int {
        guard let f = fraction else { return 0 }
        let k = Int((f * Double(n)).rounded())
        guard k >= 1 && k < n else {
            throw AETError.usage("--val-split \(f): holds out \(k) of the \(n) training images; both parts need at least one image")
        }
        return k
    }
}

/// One evaluation as the parts that watch training see it: the test split, the validation split
/// (with --val-split) and the epoch's mean training loss (epoch ends only).
public struct EvaluationRecord: Sendable {
    public var step: Int
    /// Epochs completed (the evaluation at the end of a run stopped between epoch ends: the
    /// epoch in progress, counted).
    public var epoch: Int
    public var atEpochEnd: Bool
    public var test: (mse: Double, bce: Double, pen: Double)
    public var validation: (mse: Double, bce: Double, pen: Double)?
    public var trainLoss: Double?

    public func value(_ key: MonitorKey) -> Double? {
        switch key {
        case .testMSE: return test.mse
        case .testBCE: return test.bce
        case .valMSE: return validation?.mse
        case .valBCE: return validation?.bce
        case .trainLoss: return trainLoss
        }
    }
}

/// The monitor's state, carried in checkpoint metadata (`monitor_state`) so that the best
/// value and the early-stopping count survive a resume.
public struct MonitorState: Codable, Equatable, Sendable {
    public var monitor: MonitorKey
    /// The lowest finite value so far (strictly lower replaces it) and where it was reached.
    public var best: Double?
    public var bestStep: Int?
    public var bestEpoch: Int?
    /// Early stopping: the reference value (replaced only by one lower by more than MIN_DELTA)
    /// and the evaluations since it was last replaced.
    public var earlyStopBest: Double?
    public var wait: Int = 0

    public init(monitor: MonitorKey) { self.monitor = monitor }

    enum CodingKeys: String, CodingKey {
        case monitor, best, bestStep = "best_step", bestEpoch = "best_epoch", earlyStopBest = "early_stop_best", wait
    }

    public func json() -> String { (try? JSON.encode(self)) ?? "{}" }

    /// Range checks against the checkpoint's step (errors are "checkpoint metadata …" causes).
    public func validate(step: Int) throws {
        if let b = best, !b.isFinite { throw AETError.data("monitor_state best \(b) is not finite") }
        if let b = earlyStopBest, !b.isFinite { throw AETError.data("monitor_state early_stop_best \(b) is not finite") }
        if let s = bestStep, !(0...step).contains(s) { throw AETError.data("monitor_state best_step \(s) out of range 0...\(step)") }
        if let e = bestEpoch, !(0...max(step, 0)).contains(e) { throw AETError.data("monitor_state best_epoch \(e) out of range") }
        if (best == nil) != (bestStep == nil) { throw AETError.data("monitor_state has best without best_step or the reverse") }
        if !(0...TrainConfig.maxEpochs).contains(wait) { throw AETError.data("monitor_state wait \(wait) out of range") }
    }
}

/// Watches each evaluation: keeps OUT/checkpoints/best.safetensors (--keep-best) and stops the
/// run (--early-stop). Every rank holds the same state (the evaluations are all-reduced), so every
/// rank takes the same decision; only rank 0 writes the file, and a failed write is agreed.
public final class ModelSelector {
    public let selection: ModelSelection
    public private(set) var state: MonitorState
    /// Set when early stopping ends the run.
    public private(set) var stopped = false
    /// OUT/checkpoints/best.safetensors, and whether it holds this run's best (written by this
    /// run, or by the run it resumed).
    public let bestPath: String
    private var hasBest = false

    public init(_ selection: ModelSelection, out: String) {
        self.selection = selection
        state = MonitorState(monitor: selection.monitor)
        bestPath = ((out as NSString).appendingPathComponent(Checkpoint.directoryName) as NSString)
            .appendingPathComponent(ModelSelector.bestFileName)
    }

    public static let bestFileName = "best.safetensors"

    /// A resumed run continues from the checkpoint's state (when it watched the same value).
    public func restore(_ s: MonitorState?) {
        guard let s else { return }
        guard s.monitor == selection.monitor else {
            printError("note: the checkpoint's best value is for \(s.monitor.rawValue), this run monitors \(selection.monitor.rawValue); starting the comparison afresh")
            return
        }
        state = s
        hasBest = s.best != nil
        if let e = selection.earlyStop, state.wait >= e.patience { stopped = true }
    }

    /// After an evaluation (before that step's checkpoint is written, so the checkpoint carries
    /// the updated state).
    func evaluated(_ r: EvaluationRecord, trainer t: Trainer) throws {
        guard let v = r.value(selection.monitor) else { return }
        if record(v, step: r.step, epoch: r.epoch, atEpochEnd: r.atEpochEnd) && selection.keepBest { try writeBest(t) }
    }

    /// Takes one monitored value; returns whether it is a new best (then best.safetensors is due).
    /// Best: strictly lower than every earlier value (Keras ModelCheckpoint save_best_only);
    /// NaN and ±Inf never are. Early stopping (Keras EarlyStopping, mode min) counts epoch-end
    /// evaluations only: one improves when it is lower than the reference by more than
    /// MIN_DELTA; PATIENCE evaluations in a row that do not stop the run.
    @discardableResult
    public func record(_ v: Double, step: Int, epoch: Int, atEpochEnd: Bool) -> Bool {
        let improved = v.isFinite && v < (state.best ?? .infinity)
        if improved {
            state.best = v
            state.bestStep = step
            state.bestEpoch = epoch
        }
        if let es = selection.earlyStop, atEpochEnd {
            if v.isFinite && v + es.minDelta < (state.earlyStopBest ?? .infinity) {
                state.earlyStopBest = v
                state.wait = 0
            } else {
                state.wait += 1
                if state.wait >= es.patience { stopped = true }
            }
        }
        return improved
    }

    /// Rank 0 writes the current model as OUT/checkpoints/best.safetensors (atomically, the
    /// checkpoint format); a failure follows --on-checkpoint-error on every rank.
    func writeBest(_ t: Trainer) throws {
        var failure: AETError? = nil
        if t.comm.isRoot {
            do {
                let data = try Checkpoint.encode(model: t.model, adam: t.adam, position: t.position, config: t.config,
                                                 worldSize: t.comm.size, monitorState: state)
                let dir = (bestPath as NSString).deletingLastPathComponent
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try AtomicFile.write(data, to: URL(fileURLWithPath: bestPath))
                hasBest = true
            } catch let e as AETError {
                failure = e
            } catch {
                failure = AETError.io("best checkpoint: \(error)")
            }
        }
        if let f = failure, t.config.onCheckpointError == .continue {
            printError("warning: best checkpoint not written at step \(t.position.step): \(f.message) (--on-checkpoint-error continue)")
            failure = nil
        }
        // The other ranks wait here while rank 0 writes: not a stall (untimed by the watchdog).
        try t.comm.waitingForRoot {
            try t.comm.agree(failure.map { AETError("best checkpoint failed at step \(t.position.step): \($0.message)", exitCode: $0.exitCode) },
                             what: "best checkpoint")
        }
    }

    /// The summary's selection keys.
    func fill(_ s: inout RunSummary) {
        s.monitor = selection.monitor.rawValue
        s.monitorSplit = selection.monitor.split
        s.bestValue = state.best
        s.bestStep = state.bestStep
        s.bestEpoch = state.bestEpoch
        if selection.keepBest && hasBest && FileManager.default.fileExists(atPath: bestPath) { s.bestCheckpoint = bestPath }
    }
}

extension ModelSelector {
    /// After a resume: every rank takes rank 0's state (rank 0 read it from the checkpoint).
    func share(comm: Communicator) {
        guard comm.size > 1 else { return }
        var bytes: [UInt8] = comm.isRoot ? Array(state.json().utf8) : []
        comm.broadcast(&bytes, root: 0, what: "monitor state broadcast")
        if !comm.isRoot, let s = try? JSON.decode(MonitorState.self, from: String(decoding: bytes, as: UTF8.self)) {
            restore(s)
        }
    }
}
