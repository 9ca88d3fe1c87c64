/// The lines of OUT/metrics.jsonl (JSON Lines, keys sorted, non-finite numbers `null`), as
/// typed contracts; README.md's metrics.jsonl table lists the same keys (ContractTests checks it).
public enum MetricsLine {
    /// A training line: every --log-every steps, at each epoch's last batch and at the last step.
    public struct Step: Codable, Equatable, Sendable {
        /// Optimiser steps taken, and the epoch (1-based) the step belongs to.
        public var step: Int
        public var epoch: Int
        /// Mean objective over the global batch (the all-reduced loss sum over the all-reduced count).
        public var loss: Double
        /// Training samples per second since the previous line.
        public var samplesPerSecond: Double
        /// Samples in the global batch.
        public var samples: Int
        /// The learning rate of the step's update (--lr, or its --lr-schedule / --warmup-steps /
        /// --scale-lr value at that step).
        public var lr: Double
        /// VAE and penalty models: the reconstruction term alone.
        public var recon: Double?
        /// VAE: the KL term.
        public var kl: Double?
        /// Sparse and contractive models: the penalty term.
        public var penalty: Double?
        /// Seconds since training started, continued across resumes (measures time).
        public var elapsedSeconds: Double?

        public init(step: Int, epoch: Int, loss: Double, samplesPerSecond: Double, samples: Int, lr: Double,
                    recon: Double? = nil, kl: Double? = nil, penalty: Double? = nil) {
            self.step = step
            self.epoch = epoch
            self.loss = loss
            self.samplesPerSecond = samplesPerSecond
            self.samples = samples
            self.lr = lr
            self.recon = recon
            self.kl = kl
            self.penalty = penalty
        }

        public enum CodingKeys: String, CodingKey, CaseIterable {
            case step, epoch, loss, samplesPerSecond = "samples_per_second", samples, lr, recon, kl, penalty
            case elapsedSeconds = "elapsed_seconds"
        }
    }

    /// An evaluation line: after each epoch, and once more at the end of a run that stopped
    /// between epoch ends (that one without `train_loss`).
    public struct Evaluation: Codable, Equatable, Sendable {
        /// Epochs completed (the final line: the epoch in progress, counted), and steps taken.
        public var epoch: Int
        public var step: Int
        /// Per-pixel reconstruction MSE and BCE on the test split (clean inputs; VAE: decoded from μ).
        public var testMSE: Double
        public var testBCE: Double
        /// VAE: mean KL per test image.
        public var testKL: Double?
        /// Mean training loss over the epoch's applied steps (`null` when none was applied).
        public var trainLoss: Double?
        /// --val-split: per-pixel MSE and BCE on the held-out validation images.
        public var valMSE: Double?
        public var valBCE: Double?
        /// Seconds since training started, continued across resumes (measures time).
        public var elapsedSeconds: Double?

        public init(epoch: Int, step: Int, testMSE: Double, testBCE: Double, testKL: Double? = nil, trainLoss: Double? = nil) {
            self.epoch = epoch
            self.step = step
            self.testMSE = testMSE
            self.testBCE = testBCE
            self.testKL = testKL
            self.trainLoss = trainLoss
        }

        public enum CodingKeys: String, CodingKey, CaseIterable {
            case epoch, step, testMSE = "test_mse", testBCE = "test_bce", testKL = "test_kl", trainLoss = "train_loss"
            case valMSE = "val_mse", valBCE = "val_bce", elapsedSeconds = "elapsed_seconds"
        }
    }
}
