import Foundation

/// OUT/summary.json (pretty-printed, keys sorted, non-finite numbers `null`) as a typed contract;
/// README.md's summary.json table lists the same keys (ContractTests checks it). A key is written
/// when its value is set: a training run sets the "run" and "results" groups, the others are
/// added by what ran after training (resume, report, anomaly scoring). `anomaly --checkpoint`,
/// which does not train, writes `model`, `dataset`, `checkpoint` and the anomaly keys.
public struct RunSummary: Codable, Sendable {
    // MARK: the run
    public var model: String
    public var dataset: String?
    public var worldSize: Int?
    /// The gradient exchange: "shared", "allreduce", or "none" for one rank.
    public var gradSync: String?
    public var epochs: Int?
    public var epochsCompleted: Int?
    public var steps: Int?
    public var globalBatchSize: Int?
    public var paramCount: Int?
    public var latent: Int?
    /// The loss ("mse", "bce", "l1"), the code penalty (when the model has one), the input noise
    /// (when set).
    public var loss: String?
    public var penalty: String?
    public var noise: String?
    public var trainSetSize: Int?
    public var testSetSize: Int?
    public var blasThreads: Int?
    /// --precision: "f32" or "bf16" (the arithmetic of the matrix products and convolutions).
    public var computePrecision: String?
    public var aetrainVersion: String?

    // MARK: results
    /// Mean training loss over the last epoch's applied steps.
    public var trainLoss: Double?
    /// Per-pixel MSE and BCE on the test split; the VAE's mean KL per test image.
    public var testMSE: Double?
    public var testBCE: Double?
    public var testKL: Double?
    /// --val-split: the held-out images, and their per-pixel MSE and BCE at the end.
    public var valSetSize: Int?
    public var valMSE: Double?
    public var valBCE: Double?
    /// Why training ended: "epochs", "max_steps" or "early_stop".
    public var stopReason: String?
    /// --keep-best/--monitor/--early-stop/--val-split: the monitored value, the split it is
    /// measured on ("test", "validation", "train"), its best value and where, best.safetensors.
    public var monitor: String?
    public var monitorSplit: String?
    public var bestValue: Double?
    public var bestStep: Int?
    public var bestEpoch: Int?
    public var bestCheckpoint: String?

    // MARK: speed and memory (these measure time and vary from run to run)
    public var trainSamples: Int?
    /// Training samples per second of training time (evaluation excluded).
    public var samplesPerSecond: Double?
    public var trainSeconds: Double?
    public var wallSeconds: Double?
    public var msPerStep: PhaseMilliseconds?
    public var trainGflops: Double?
    public var peakRssMb: Double?
    public var peakRssMbPerRank: [Double]?
    /// Proportional set size of every rank at the end of training (Linux): pages shared by several
    /// processes (the node's data window) count 1/k in each of the k that map them, so the sum over
    /// a node's ranks is the node's memory.
    public var pssMbPerRank: [Double]?
    /// Copies of the decoded data in the job: one per node when it sits in the node's shared
    /// window, else one per rank.
    public var dataCopies: Int?
    /// Nodes the ranks span (the test hook's pretend nodes too); set with more than one rank.
    public var nodes: Int?

    // MARK: after training
    /// The last checkpoint written; the step a resumed run started from.
    public var checkpoint: String?
    public var resumedFromStep: Int?
    /// The report (unless --no-report): PCA baseline at the model's code size, report path, time.
    public var pcaTestMSE: Double?
    public var pcaComponents: Int?
    /// The report's other baseline: every test image predicted by the training set's mean image.
    public var meanImageTestMSE: Double?
    public var report: String?
    public var reportSeconds: Double?

    // MARK: anomaly
    public var normalClass: Int?
    public var rocAuc: Double?
    public var perClassMeanError: [String: Double]?
    public var threshold: Double?
    public var thresholdPercentile: Int?
    public var precision: Double?
    public var recall: Double?
    public var histogram: String?

    public init(model: String) { self.model = model }

    /// Milliseconds per step in each phase (and in total), averaged over the run's steps.
    public struct PhaseMilliseconds: Codable, Sendable {
        public var data: Double
        public var forward: Double
        public var backward: Double
        /// The gradient exchange and the step's other collectives.
        public var allreduce: Double
        public var optimizer: Double
        public var total: Double

        public enum CodingKeys: String, CodingKey, CaseIterable {
            case data, forward, backward, allreduce, optimizer, total
        }
    }

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case model, dataset, worldSize = "world_size", gradSync = "grad_sync", epochs, epochsCompleted = "epochs_completed"
        case steps, globalBatchSize = "global_batch_size", paramCount = "param_count", latent, loss, penalty, noise
        case trainSetSize = "train_set_size", testSetSize = "test_set_size", blasThreads = "blas_threads"
        case computePrecision = "compute_precision", aetrainVersion = "aetrain_version"
        case trainLoss = "train_loss", testMSE = "test_mse", testBCE = "test_bce", testKL = "test_kl"
        case valSetSize = "val_set_size", valMSE = "val_mse", valBCE = "val_bce", stopReason = "stop_reason"
        case monitor, monitorSplit = "monitor_split", bestValue = "best_value", bestStep = "best_step", bestEpoch = "best_epoch"
        case bestCheckpoint = "best_checkpoint", meanImageTestMSE = "mean_image_test_mse"
        case trainSamples = "train_samples", samplesPerSecond = "samples_per_second", trainSeconds = "train_seconds"
        case wallSeconds = "wall_seconds", msPerStep = "ms_per_step", trainGflops = "train_gflops"
        case peakRssMb = "peak_rss_mb", peakRssMbPerRank = "peak_rss_mb_per_rank", pssMbPerRank = "pss_mb_per_rank"
        case dataCopies = "data_copies", nodes
        case checkpoint, resumedFromStep = "resumed_from_step", pcaTestMSE = "pca_test_mse", pcaComponents = "pca_components"
        case report, reportSeconds = "report_seconds"
        case normalClass = "normal_class", rocAuc = "roc_auc", perClassMeanError = "per_class_mean_error", threshold
        case thresholdPercentile = "threshold_percentile", precision, recall, histogram
    }

    /// The JSON object, as summary.json holds it (also the report's summary table).
    public func jsonObject() throws -> [String: Any] {
        guard let o = try JSONObjectEncoder.object(self) as? [String: Any] else { throw AETError("summary: not a JSON object") }
        return o
    }

    /// Writes OUT/summary.json atomically.
    public func write(out: String) throws {
        let url = URL(fileURLWithPath: out).appendingPathComponent("summary.json")
        try AtomicFile.write((try JSON.encode(self, pretty: true) + "\n").data(using: .utf8)!, to: url)
    }
}
