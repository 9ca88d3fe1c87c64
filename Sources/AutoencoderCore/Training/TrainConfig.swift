import Foundation

/// How ranks combine gradients. `allreduce`: every rank holds the parameters and Adam moments and
/// joins one MPI all-reduce of the flat gradient, then takes the whole Adam step. `shared` (one
/// node): gradients sit in an MPI shared window; each rank sums them over its own slice of the
/// parameters inside the Adam pass and publishes that slice (ZeRO-1 through shared memory; see
/// NodeSharedExchange). `hierarchical` (several nodes): shared inside each node, each slice
/// all-reduced across nodes (HierarchicalExchange). `auto`: shared on one node, hierarchical
/// across nodes with several ranks on a node, else allreduce (chooseGradientExchange).
public enum GradientSync: String, Codable, CaseIterable, Sendable { case auto, shared, allreduce, hierarchical }

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
    /// --overwrite: a fresh run into a folder with another run's checkpoints moves them aside
    /// (nil when not given, so that older configs and checkpoints read the same).
    public var overwrite: Bool? = nil
    public var checkSync: Int = 0
    /// Gradient bucket size in MB for all-reduce overlapped with backward (0: one blocking all-reduce).
    public var bucketSizeMB: Double = 0
    /// --grad-sync (nil: auto; optional so that older checkpoint metadata still decodes).
    public var gradientSync: GradientSync? = nil
    /// --lr-schedule, --warmup-steps, --scale-lr (nil: --lr at every step; optional so that older
    /// checkpoint metadata still decodes).
    public var lrSchedule: LRSchedule? = nil
    public var collectiveTimeout: Double = 300
    public var onNaN: OnNaN = .stop
    public var onCheckpointError: OnCheckpointError = .stop
    /// Anomaly detection: train on this class only.
    public var normalClass: Int? = nil
    public var report: Bool = true
    public var reportEveryEpoch: Bool = false
    /// --keep-best, --monitor, --early-stop, --val-split (nil when none is given, so that the
    /// config of a run without them is unchanged).
    public var selection: ModelSelection? = nil
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


    /// Upper bounds of the counts a flag or a checkpoint may hold (sanity limits, README "Size limits").
    public static let maxEpochs = 1_000_000_000
    public static let maxSteps = 1_000_000_000_000
    public static let maxWorldSize = 1 << 20
    public static let maxCollectiveTimeout = 1e9
    public static let maxBucketSizeMB = 100_000.0

    /// Range checks of every value on its own (no world size, no memory); errors name the flag.
    /// Also used for the config stored in a checkpoint.
    public func validateValues() throws {
        if batchSize <= 0 { throw AETError.usage("--batch-size \(batchSize): must be positive") }
        if batchSize > IDX.maxCount { throw AETError.usage("--batch-size \(batchSize): must be at most \(IDX.maxCount)") }
        if !(adam.lr > 0) || !adam.lr.isFinite { throw AETError.usage("--lr \(adam.lr): must be a positive number") }
        if !(adam.weightDecay >= 0 && adam.weightDecay.isFinite) { throw AETError.usage("--weight-decay \(adam.weightDecay): must be a finite number ≥ 0") }
        if !(adam.beta1 >= 0 && adam.beta1 < 1) { throw AETError.usage("--beta1 \(adam.beta1): must be in [0, 1)") }
        if !(adam.beta2 >= 0 && adam.beta2 < 1) { throw AETError.usage("--beta2 \(adam.beta2): must be in [0, 1)") }
        if !(adam.eps > 0 && adam.eps.isFinite) { throw AETError.usage("--eps \(adam.eps): must be a finite number > 0") }
        if !(0...TrainConfig.maxEpochs).contains(epochs) { throw AETError.usage("--epochs \(epochs): must be in 0...\(TrainConfig.maxEpochs)") }
        if let m = maxSteps, !(0...TrainConfig.maxSteps).contains(m) { throw AETError.usage("--max-steps \(m): must be in 0...\(TrainConfig.maxSteps)") }
        if let t = trainLimit, t <= 0 { throw AETError.usage("--train-limit \(t): must be positive") }
        if let t = testLimit, t <= 0 { throw AETError.usage("--test-limit \(t): must be positive") }
        if logEvery <= 0 { throw AETError.usage("--log-every \(logEvery): must be positive") }
        if keep <= 0 { throw AETError.usage("--keep \(keep): must be positive") }
        if checkpointEvery < 0 { throw AETError.usage("--checkpoint-every \(checkpointEvery): must be ≥ 0") }
        if !(bucketSizeMB >= 0 && bucketSizeMB <= TrainConfig.maxBucketSizeMB) {
            throw AETError.usage("--bucket-size \(bucketSizeMB): must be a number of MB in 0...\(Int(TrainConfig.maxBucketSizeMB))")
        }
        if checkSync < 0 { throw AETError.usage("--check-sync \(checkSync): must be ≥ 0") }
        if let g = gradientSync, g == .shared || g == .hierarchical, bucketSizeMB > 0 {
            throw AETError.usage("--bucket-size \(bucketSizeMB): overlapped all-reduce needs --grad-sync allreduce or auto, not \(g.rawValue)")
        }
        try TrainConfig.checkCollectiveTimeout(collectiveTimeout)
        try lrSchedule?.validate()
        for (flag, v) in [("--sparsity-weight", Double(objective.sparsityWeight)), ("--contractive-weight", Double(objective.contractiveWeight)),
                          ("--beta", Double(objective.beta))] where !(v.isFinite && v >= 0) {
            throw AETError.usage("\(flag) \(v): must be a finite number ≥ 0")
        }
        if !(objective.sparsityTarget > 0 && objective.sparsityTarget < 1) {
            throw AETError.usage("--sparsity-target \(objective.sparsityTarget): must be in (0, 1)")
        }
        if let n = noise {
            let p = n.kind == .saltPepper || n.kind == .mask
            if !(n.amount.isFinite && n.amount >= 0 && (!p || n.amount <= 1)) { throw AETError.usage("--noise \(n): amount out of range") }
        }
        if let c = normalClass, !(0...9).contains(c) { throw AETError.usage("--normal-class \(c): must be 0...9") }
        if precision == .bf16 && !DNNL.bf16Supported {
            throw AETError.usage("--precision bf16: oneDNN has no bf16 kernels for this CPU (it runs \(DNNL.isa) code; bf16 needs AVX-512); use --precision f32")
        }
        if resume == "" { throw AETError.usage("--resume: empty path (pass auto or a checkpoint file)") }
        if overwrite == true, let r = resume {
            throw AETError.usage("--overwrite starts a new run; it cannot be combined with --resume \(r)")
        }
        if out.isEmpty { throw AETError.usage("--out: empty path") }
        try selection?.validate()
    }

    /// --collective-timeout: a finite number of seconds ≥ 0 (0 disables the watchdog).
    public static func checkCollectiveTimeout(_ t: Double) throws {
        if !(t >= 0 && t <= maxCollectiveTimeout) {
            throw AETError.usage("--collective-timeout \(t): must be a finite number of seconds in 0...\(Int(maxCollectiveTimeout)) (0 disables)")
        }
    }

    /// The flags that set the model's size, for messages ("--encoder 256,64 --latent 16").
    public var modelFlags: String {
        func code(_ s: ModelSpec) -> Int? {
            guard case .dense(let u, _)? = s.encoder.last else { return nil }
            return s.variational ? u / 2 : u
        }
        let latent = code(model).map(String.init) ?? "?"
        if model.name == "custom" {
            let widths = model.encoder.dropLast().compactMap { l -> Int? in if case .dense(let u, _) = l { return u }; return nil }
            return "--encoder \(widths.map(String.init).joined(separator: ",")) --latent \(latent)"
        }
        if let p = ModelSpec.preset(model.name), code(p) != code(model) { return "--latent \(latent)" }
        return "--model \(model.name)"
    }

    /// Cross-field checks; errors name the flag. Checks too that the model and a batch of
    /// ceil(batch / world size) samples per rank fit in the memory of this machine (shared by the
    /// ranks on it) before anything is allocated.
    public func validate(worldSize: Int) throws {
        try validateValues()
        if worldSize > batchSize {
            throw AETError.usage("--batch-size \(batchSize): smaller than the world size \(worldSize); every rank needs at least one sample per step")
        }
        let layout: Autoencoder.Layout
        do { layout = try Autoencoder.layout(model) } catch let e as AETError {
            throw AETError.usage("\(modelFlags): \(e.message)")
        }
        let local = max(1, min(worldSize, Launcher.localSize ?? 1))
        let avail = Double(Memory.available) / Double(local)
        let share = local > 1 ? " per rank (\(Memory.format(Double(Memory.available))) shared by \(local) ranks)" : ""
        let modelBytes = layout.estimatedBytes(maxBatch: 1)
        if modelBytes > avail {
            throw AETError.usage("\(modelFlags): the model (\(layout.parameterCount) parameters) would need \(Memory.format(modelBytes)) of memory; \(Memory.format(avail)) is available\(share)")
        }
        let perRank = (batchSize + worldSize - 1) / worldSize
        let bytes = layout.estimatedBytes(maxBatch: perRank)
        if bytes > avail {
            throw AETError.usage("--batch-size \(batchSize): \(perRank) samples per rank would need \(Memory.format(bytes)) of memory for \(model.name); \(Memory.format(avail)) is available\(share)")
        }
    }
}
