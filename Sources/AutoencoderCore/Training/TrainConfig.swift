import Foundation

/// How ranks combine gradients. `allreduce`: every rank holds the parameters and Adam moments and
/// joins one MPI all-reduce of the flat gradient, then takes the whole Adam step. `shared` (one
/// node): gradients sit in an MPI shared window; each rank sums them over its own slice of the
/// parameters inside the Adam pass and publishes that slice (ZeRO-1 through shared memory; see
/// Trainer.SharedState). `auto`: shared when every rank is on one node, else allreduce.
public enum GradientSync: String, Codable, CaseIterable, Sendable { case auto, shared, allreduce }

public enum OnNaN: String, Codable, CaseIterable, Sendable { case stop, skip }
public enum OnCheckpointError: String, Codable, CaseIterable, Sendable { case stop, `continue` }

/// The fully resolved run configuration. Every rank must hold the same one (checked at start-up
/// by hash); it is stored in every checkpoint's metadata.
public struct TrainConfig: Codable, Equatable, Sendable {
    public var model: ModelSpec
    public var dataset: DatasetName = .fashionMNIST
    public var dataDir: String = ""
    public var objective = Objective()
    public var adam = AdamConfig()
    public var initScheme: InitScheme = .torch
    public var epochs: Int = 10
    public var maxSteps: Int? = nil
    public var batchSize: Int = 128
    public var seed: UInt64 = 0
    public var trainLimit: Int? = nil
    public var testLimit: Int? = nil
    public var out: String = "./aetrain-run"
    public var logEvery: Int = 50
    public var binarize: Bool = false
    public var noise: NoiseSpec? = nil
    public var checkpointEvery: Int = 0
    public var keep: Int = 3
    public var resume: String? = nil
    public var checkSync: Int = 0
    /// Gradient bucket size in MB for all-reduce overlapped with backward (0: one blocking all-reduce).
    public var bucketSizeMB: Double = 0
    /// --grad-sync (nil: auto; optional so that older checkpoint metadata still decodes).
    public var gradientSync: GradientSync? = nil
    public var collectiveTimeout: Double = 300
    public var onNaN: OnNaN = .stop
    public var onCheckpointError: OnCheckpointError = .stop
    /// Anomaly detection: train on this class only.
    public var normalClass: Int? = nil
    public var report: Bool = true
    public var reportEveryEpoch: Bool = false
    /// --precision (nil: f32; optional so that older checkpoint metadata still decodes).
    public var precision: Precision? = nil

    public init(model: ModelSpec) { self.model = model }

    /// Reads `json()` back (non-finite numbers travel as strings).
    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }

    public func json(pretty: Bool = false) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        // A non-finite value (rejected later by validate) must not crash the encoder.
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(data: try! enc.encode(self), encoding: .utf8)!
    }


    /// Cross-field checks; errors name the flag.
    public func validate(worldSize: Int) throws {
        if batchSize <= 0 { throw AETError.usage("--batch-size \(batchSize): must be positive") }
        if !(adam.lr > 0) || !adam.lr.isFinite { throw AETError.usage("--lr \(adam.lr): must be a positive number") }
        if adam.weightDecay < 0 { throw AETError.usage("--weight-decay \(adam.weightDecay): must be ≥ 0") }
        if !(adam.beta1 >= 0 && adam.beta1 < 1) { throw AETError.usage("--beta1 \(adam.beta1): must be in [0, 1)") }
        if !(adam.beta2 >= 0 && adam.beta2 < 1) { throw AETError.usage("--beta2 \(adam.beta2): must be in [0, 1)") }
        if !(adam.eps > 0) { throw AETError.usage("--eps \(adam.eps): must be positive") }
        if epochs < 0 { throw AETError.usage("--epochs \(epochs): must be ≥ 0") }
        if let m = maxSteps, m < 0 { throw AETError.usage("--max-steps \(m): must be ≥ 0") }
        if let t = trainLimit, t <= 0 { throw AETError.usage("--train-limit \(t): must be positive") }
        if let t = testLimit, t <= 0 { throw AETError.usage("--test-limit \(t): must be positive") }
        if logEvery <= 0 { throw AETError.usage("--log-every \(logEvery): must be positive") }
        if keep <= 0 { throw AETError.usage("--keep \(keep): must be positive") }
        if checkpointEvery < 0 { throw AETError.usage("--checkpoint-every \(checkpointEvery): must be ≥ 0") }
        if !(bucketSizeMB >= 0) { throw AETError.usage("--bucket-size \(bucketSizeMB): must be ≥ 0") }
        if checkSync < 0 { throw AETError.usage("--check-sync \(checkSync): must be ≥ 0") }
        if gradientSync == .shared && bucketSizeMB > 0 {
            throw AETError.usage("--bucket-size \(bucketSizeMB): overlapped all-reduce needs --grad-sync allreduce or auto, not shared")
        }

        if collectiveTimeout < 0 { throw AETError.usage("--collective-timeout \(collectiveTimeout): must be ≥ 0") }
        if worldSize > batchSize {
            throw AETError.usage("--batch-size \(batchSize): smaller than the world size \(worldSize); every rank needs at least one sample per step")
        }
        for (flag, v) in [("--sparsity-weight", Double(objective.sparsityWeight)), ("--contractive-weight", Double(objective.contractiveWeight)),
                          ("--beta", Double(objective.beta))] where !(v.isFinite && v >= 0) {
            throw AETError.usage("\(flag) \(v): must be a finite number ≥ 0")
        }
        if !(objective.sparsityTarget > 0 && objective.sparsityTarget < 1) {
            throw AETError.usage("--sparsity-target \(objective.sparsityTarget): must be in (0, 1)")
        }
        if let c = normalClass, !(0...9).contains(c) { throw AETError.usage("--normal-class \(c): must be 0...9") }
        if precision == .bf16 && !DNNL.bf16Supported {
            throw AETError.usage("--precision bf16: oneDNN has no bf16 kernels for this CPU (it runs \(DNNL.isa) code; bf16 needs AVX-512); use --precision f32")
        }
    }
}
