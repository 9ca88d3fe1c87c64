import Foundation

/// The typed contract of a checkpoint's `__metadata__`. Safetensors metadata holds strings only:
/// each field is stored as its decimal or raw string, `config` as the TrainConfig JSON.
///
/// `init(strings:path:)` parses and range-checks every field on its own and against the others;
/// `Checkpoint.read` then checks the tensors against the model the config builds.
public struct CheckpointMetadata: Codable, Equatable, Sendable {
    /// 1: `data_sha256` covers the data section only; 2: `file_sha256` covers the whole file too.
    public var formatVersion: Int
    /// Optimiser steps taken (also the global batches consumed).
    public var step: Int
    /// Completed epochs, and the next global batch within the epoch in progress.
    public var epoch: Int
    public var batchInEpoch: Int
    /// Adam's step counter (≤ step: --on-nan skip skips updates).
    public var adamStep: Int
    /// Ranks of the run that wrote it.
    public var worldSize: Int
    public var model: String
    public var dataset: DatasetName
    public var config: TrainConfig
    public var aetrainVersion: String
    /// SHA-256 of the data section (both formats) and of the whole file (format 2); set on encode.
    public var dataSHA256: String?
    public var fileSHA256: String?
    /// Mid-epoch only: Σ loss and Σ count of the epoch's applied steps so far, so that a resumed
    /// run reports the whole epoch's train_loss. Absent in older files (and at epoch ends).
    public var epochLossSum: Double?
    public var epochLossCount: Double?
    /// The earlier checkpoints of the same run (fresh start and its resumes) that were still kept
    /// in the same folder when this one was written, oldest first (file names). A run resumed from
    /// this file prunes those as its own; it never touches any other file.
    public var previousCheckpoints: [String]?
    /// The best monitored value and early-stopping count (runs with --keep-best, --monitor,
    /// --early-stop or --val-split); the string `monitor_state` holds it as JSON.
    public var monitorState: MonitorState?

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", step, epoch, batchInEpoch = "batch_in_epoch", adamStep = "adam_step"
        case worldSize = "world_size", model, dataset, config, aetrainVersion = "aetrain_version"
        case dataSHA256 = "data_sha256", fileSHA256 = "file_sha256", monitorState = "monitor_state"
        case epochLossSum = "epoch_loss_sum", epochLossCount = "epoch_loss_count", previousCheckpoints = "previous_checkpoints"
    }

    public init(position: RunPosition, adamStep: Int, worldSize: Int, config: TrainConfig,
                epochLoss: (sum: Double, count: Double)? = nil, previousCheckpoints: [String]? = nil) {
        formatVersion = Checkpoint.currentFormat
        step = position.step
        epoch = position.epoch
        batchInEpoch = position.batchInEpoch
        self.adamStep = adamStep
        self.worldSize = worldSize
        model = config.model.name
        dataset = config.dataset
        self.config = config
        aetrainVersion = AutoencoderCore.aetrainVersion
        if let e = epochLoss, position.batchInEpoch > 0 {
            epochLossSum = e.sum
            epochLossCount = e.count
        }
        if let p = previousCheckpoints, !p.isEmpty { self.previousCheckpoints = p }
    }

    public var position: RunPosition {
        var p = RunPosition()
        p.step = step; p.epoch = epoch; p.batchInEpoch = batchInEpoch
        return p
    }

    /// The safetensors `__metadata__` map (checksums are added by the encoder).
    public var strings: [String: String] {
        var m: [String: String] = [
            "format_version": String(formatVersion), "step": String(step), "epoch": String(epoch),
            "batch_in_epoch": String(batchInEpoch), "adam_step": String(adamStep), "world_size": String(worldSize),
            "model": model, "dataset": dataset.rawValue, "config": config.json(), "aetrain_version": aetrainVersion,
        ]
        if let d = dataSHA256 { m[Safetensors.checksumKey] = d }
        if let f = fileSHA256 { m[Safetensors.fileChecksumKey] = f }
        // Shortest decimal that reads back as the same Double.
        if let v = epochLossSum { m["epoch_loss_sum"] = String(v) }
        if let v = epochLossCount { m["epoch_loss_count"] = String(v) }
        if let p = previousCheckpoints { m["previous_checkpoints"] = p.joined(separator: ",") }
        if let s = monitorState { m["monitor_state"] = s.json() }
        return m
    }

    /// Parses the string map and checks every field; errors are AETError.data "PATH: cause".
    public init(strings m: [String: String], path: String) throws {
        func fail(_ cause: String) -> AETError { AETError.data("\(path): \(cause)") }
        func int(_ key: String) throws -> Int {
            guard let s = m[key] else { throw fail("checkpoint metadata lacks \(key)") }
            guard let v = Int(s) else { throw fail("checkpoint metadata \(key) '\(s.prefix(40))' is not an integer") }
            return v
        }
        formatVersion = try int("format_version")
        guard Checkpoint.readableFormats.contains(formatVersion) else {
            throw fail("unsupported checkpoint format_version \(formatVersion) (this aetrain reads \(Checkpoint.readableFormats.map(String.init).joined(separator: " and ")))")
        }
        guard let cj = m["config"], let cd = cj.data(using: .utf8) else { throw fail("checkpoint metadata has no config") }
        do {
            config = try TrainConfig.decoder.decode(TrainConfig.self, from: cd)
        } catch let e as DecodingError {
            throw fail("checkpoint metadata has no readable config (\(CheckpointMetadata.reason(e)))")
        } catch {
            throw fail("checkpoint metadata has no readable config")
        }
        step = try int("step")
        epoch = try int("epoch")
        batchInEpoch = try int("batch_in_epoch")
        adamStep = try int("adam_step")
        worldSize = try int("world_size")
        guard let mn = m["model"] else { throw fail("checkpoint metadata lacks model") }
        model = mn
        guard let ds = m["dataset"] else { throw fail("checkpoint metadata lacks dataset") }
        guard let d = DatasetName(rawValue: ds) else { throw fail("checkpoint metadata dataset '\(ds.prefix(40))' is not mnist or fashion-mnist") }
        dataset = d
        aetrainVersion = m["aetrain_version"] ?? ""
        dataSHA256 = m[Safetensors.checksumKey]
        fileSHA256 = m[Safetensors.fileChecksumKey]
        func double(_ key: String) throws -> Double? {
            guard let s = m[key] else { return nil }
            guard let v = Double(s) else { throw fail("checkpoint metadata \(key) '\(s.prefix(40))' is not a number") }
            return v
        }
        epochLossSum = try double("epoch_loss_sum")
        epochLossCount = try double("epoch_loss_count")
        previousCheckpoints = m["previous_checkpoints"].map { $0.isEmpty ? [] : $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        if let s = m["monitor_state"] {
            do { monitorState = try JSON.decode(MonitorState.self, from: s) } catch {
                throw fail("checkpoint metadata monitor_state is not a readable monitor state")
            }
        }
        try validate(path: path)
    }

    /// A decoding failure in one line: where and what.
    static func reason(_ e: DecodingError) -> String {
        func path(_ c: [CodingKey]) -> String { c.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") }
        switch e {
        case .keyNotFound(let k, let ctx): return "\(path(ctx.codingPath + [k])) missing"
        case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
            return "\(path(ctx.codingPath)): \(Safetensors.oneLine(ctx.debugDescription))"
        @unknown default: return "invalid"
        }
    }

    /// Range and consistency checks that need nothing but the metadata.
    public func validate(path: String) throws {
        func fail(_ cause: String) -> AETError { AETError.data("\(path): checkpoint metadata \(cause)") }
        switch formatVersion {
        case 1: guard dataSHA256 != nil else { throw AETError.data("\(path): missing \(Safetensors.checksumKey) checksum in __metadata__") }
        default: guard fileSHA256 != nil else { throw AETError.data("\(path): missing \(Safetensors.fileChecksumKey) checksum in __metadata__ (format_version \(formatVersion))") }
        }
        guard (0...TrainConfig.maxSteps).contains(step) else { throw fail("step \(step) out of range 0...\(TrainConfig.maxSteps)") }
        guard epoch >= 0 else { throw fail("epoch \(epoch) is negative") }
        guard batchInEpoch >= 0 else { throw fail("batch_in_epoch \(batchInEpoch) is negative") }
        // Every completed epoch took at least one step. (batch_in_epoch is not bounded by the
        // steps: a resume at another batch size may re-map it onto the new epoch geometry.)
        guard epoch <= step else { throw fail("epoch \(epoch) exceeds step \(step) (every epoch takes at least one step)") }
        guard (0...step).contains(adamStep) else { throw fail("adam_step \(adamStep) out of range 0...\(step) (step)") }
        guard (1...TrainConfig.maxWorldSize).contains(worldSize) else { throw fail("world_size \(worldSize) out of range 1...\(TrainConfig.maxWorldSize)") }
        guard model == config.model.name else { throw fail("model \(model) differs from the config's model \(config.model.name)") }
        guard dataset == config.dataset else { throw fail("dataset \(dataset.rawValue) differs from the config's \(config.dataset.rawValue)") }
        do { try monitorState?.validate(step: step) } catch let e as AETError { throw fail(e.message) }
        do { try config.validateValues() } catch let e as AETError {
            throw fail("config is invalid: \(e.message)")
        }
        guard worldSize <= config.batchSize else { throw fail("world_size \(worldSize) exceeds the config's batch size \(config.batchSize)") }
        // The epoch in progress has at most ceil(N / batch) batches, N ≤ the training images used.
        let n = min(config.trainLimit ?? IDX.maxCount, IDX.maxCount)
        let perEpoch = (n + config.batchSize - 1) / config.batchSize
        guard batchInEpoch < perEpoch else {
            throw fail("batch_in_epoch \(batchInEpoch) is not below \(perEpoch), the most batches an epoch of \(n) images at batch size \(config.batchSize) has")
        }
        // The epoch's running loss: both or neither, mid-epoch only, finite, at most the samples taken.
        switch (epochLossSum, epochLossCount) {
        case (nil, nil): break
        case (let sum?, let count?):
            guard batchInEpoch > 0 else { throw fail("epoch_loss_sum at batch_in_epoch 0 (only a mid-epoch checkpoint has one)") }
            guard sum.isFinite && sum >= 0 else { throw fail("epoch_loss_sum \(sum) is not a finite number ≥ 0") }
            let most = Double(batchInEpoch) * Double(config.batchSize)
            guard count >= 0 && count <= most && count == count.rounded() else {
                throw fail("epoch_loss_count \(count) is not a whole number in 0...\(Int(most)) (the samples of \(batchInEpoch) batches)")
            }
        default: throw fail("has only one of epoch_loss_sum and epoch_loss_count")
        }
        if let names = previousCheckpoints {
            guard names.count < max(config.keep, 1) else {
                throw fail("previous_checkpoints lists \(names.count) files; --keep \(config.keep) keeps at most \(config.keep - 1) besides this one")
            }
            var last = -1
            for name in names {
                guard let s = Checkpoint.step(fromFileName: name), s < step, s > last else {
                    throw fail("previous_checkpoints entry '\(name.prefix(60))' is not the name of an earlier checkpoint (step-NNNNNNNN.safetensors, ascending, below step \(step))")
                }
                last = s
            }
        }
    }
}

/// Checkpoints are safetensors files: the model tensors under PyTorch state_dict names
/// (`encoder.0.weight`, [out, in] row-major, F32), the Adam moments beside them under
/// `optimizer.exp_avg.<name>` and `optimizer.exp_avg_sq.<name>`, and the string metadata of
/// `CheckpointMetadata` (format 2: `file_sha256` covers the whole file; format 1, still read:
/// `data_sha256` covers the data section).
///
/// Data order, input noise and VAE samples come from counter-based streams keyed by
/// (seed, step, sample index), so (seed, epoch, batch_in_epoch, step) is the whole RNG state.
public enum Checkpoint {
    public static let currentFormat = 2
    public static let readableFormats = [1, 2]
    /// The format written, as the metadata string.
    public static var formatVersion: String { String(currentFormat) }
    public static let directoryName = "checkpoints"

    public static func fileName(step: Int) -> String { String(format: "step-%08d.safetensors", step) }

    /// The step a checkpoint file name stands for (`step-NNNNNNNN.safetensors`, 8 or more digits), or nil.
    public static func step(fromFileName name: String) -> Int? {
        guard name.hasPrefix("step-"), name.hasSuffix(".safetensors") else { return nil }
        let digits = name.dropFirst(5).dropLast(12)
        guard digits.count >= 8, digits.count <= 18, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// Encodes model, optimiser and position (format 2). Refuses non-finite parameters.
    public static func encode(model: Autoencoder, adam: Adam, position: RunPosition, config: TrainConfig,
                              worldSize: Int, epochLoss: (sum: Double, count: Double)? = nil,
                              previousCheckpoints: [String]? = nil, monitorState: MonitorState? = nil) throws -> Data {
        let P = model.parameterCount
        guard Trainer.allFinite(model.params.pointer, P) else {
            throw AETError("refusing to write a checkpoint at step \(position.step): parameters are not finite", exitCode: ExitCode.nonFinite)
        }
        var list: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for t in model.tensors {
            list.append((t.name, t.shape, UnsafeBufferPointer(start: model.params.pointer + t.offset, count: t.count)))
        }
        for t in model.tensors {
            list.append(("optimizer.exp_avg." + t.name, t.shape, UnsafeBufferPointer(start: adam.m.pointer + t.offset, count: t.count)))
        }
        for t in model.tensors {
            list.append(("optimizer.exp_avg_sq." + t.name, t.shape, UnsafeBufferPointer(start: adam.v.pointer + t.offset, count: t.count)))
        }
        var meta = CheckpointMetadata(position: position, adamStep: adam.step, worldSize: worldSize, config: config,
                                      epochLoss: epochLoss, previousCheckpoints: previousCheckpoints)
        meta.monitorState = monitorState
        return Safetensors.encode(tensors: list, metadata: meta.strings, fileChecksum: true)
    }

    /// A validated checkpoint: typed metadata, the model layout its config builds, and the file.
    public struct Loaded {
        public let file: SafetensorsFile
        public let metadata: CheckpointMetadata
        public let layout: Autoencoder.Layout
        public var config: TrainConfig { metadata.config }
        public var position: RunPosition { metadata.position }
        public var adamStep: Int { metadata.adamStep }
    }

    /// Reads and validates a checkpoint as a whole; what `info`, `eval`, `--resume` and
    /// `--resume auto` all use, so they give the same verdict:
    /// - a regular file; safetensors header, offsets, coverage; the checksums (file and data);
    /// - every metadata field (`CheckpointMetadata`);
    /// - the config builds a valid model that fits in memory; exactly its tensors and both Adam
    ///   moments are present, F32, with the model's shapes;
    /// - every value is finite, and every exp_avg_sq value is ≥ 0.
    public static func read(_ path: String) throws -> Loaded {
        guard !path.isEmpty else { throw AETError.usage("empty checkpoint path") }
        return try validate(Safetensors.read(URL(fileURLWithPath: path), requireChecksum: true, what: "a checkpoint file"))
    }

    /// The checks of `read` on a decoded file.
    public static func validate(_ file: SafetensorsFile) throws -> Loaded {
        let path = file.path
        let meta = try CheckpointMetadata(strings: file.metadata, path: path)
        let layout: Autoencoder.Layout
        do { layout = try Autoencoder.layout(meta.config.model) } catch let e as AETError {
            throw AETError.data("\(path): checkpoint config does not build a model: \(e.message)")
        }
        let bytes = layout.estimatedBytes(maxBatch: 1)
        guard bytes <= Double(Memory.available) else {
            throw AETError.data("\(path): the model in the checkpoint's config would need \(Memory.format(bytes)) of memory; \(Memory.format(Double(Memory.available))) is available")
        }
        var expected = Set<String>()
        for t in layout.tensors {
            for n in [t.name, "optimizer.exp_avg." + t.name, "optimizer.exp_avg_sq." + t.name] {
                expected.insert(n)
                guard let info = file.tensor(n) else { throw AETError.data("\(path): tensor \(n) missing (different model?)") }
                guard info.dtype == "F32" else { throw AETError.data("\(path): tensor \(n) is \(info.dtype), expected F32") }
                guard info.shape == t.shape else {
                    throw AETError.data("\(path): tensor \(n) has shape \(info.shape), the model needs \(t.shape) (different model?)")
                }
            }
        }
        if let extra = file.tensors.first(where: { !expected.contains($0.name) }) {
            throw AETError.data("\(path): unexpected tensor \(Safetensors.quote(extra.name)) (not part of model \(meta.config.model.name))")
        }
        for t in file.tensors {
            let squares = t.name.hasPrefix("optimizer.exp_avg_sq.")
            if let bad = try file.checkValues(t.name, nonNegative: squares) {
                throw AETError.data("\(path): tensor \(t.name) holds \(bad) values; refusing to use it")
            }
        }
        return Loaded(file: file, metadata: meta, layout: layout)
    }

    /// Copies parameters (and, if given, Adam moments) into `model`, which must have been built
    /// from the checkpoint's own model spec.
    public static func restore(_ c: Loaded, into model: Autoencoder, adam: Adam?) throws {
        let path = c.file.path
        for t in model.tensors {
            guard let info = c.file.tensor(t.name), info.shape == t.shape else {
                throw AETError.data("\(path): tensor \(t.name) does not match the model (different model?)")
            }
            try c.file.copyFloats(t.name, into: model.params.pointer + t.offset, count: t.count)
            if let adam {
                try c.file.copyFloats("optimizer.exp_avg." + t.name, into: adam.m.pointer + t.offset, count: t.count)
                try c.file.copyFloats("optimizer.exp_avg_sq." + t.name, into: adam.v.pointer + t.offset, count: t.count)
            }
        }
        if let adam { adam.step = c.adamStep }
    }

    /// Checkpoint files in `out`/checkpoints, newest step first (by the number, so that step
    /// 100,000,000 comes before 99,999,999; other `step-*.safetensors` names last).
    public static func list(out: String) -> [String] {
        let dir = (out as NSString).appendingPathComponent(directoryName)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".safetensors") }
            .sorted { a, b in
                switch (step(fromFileName: a), step(fromFileName: b)) {
                case let (x?, y?): return x != y ? x > y : a > b
                case (_?, nil): return true
                case (nil, _?): return false
                case (nil, nil): return a > b
                }
            }
            .map { (dir as NSString).appendingPathComponent($0) }
    }
}

/// Rank 0 writes checkpoints (atomically) at epoch ends, every --checkpoint-every steps and on
/// preemption; it keeps the newest --keep of the run's own. Failures are agreed across ranks.
///
/// The run's own checkpoints are the ones it wrote, its resume source and the earlier ones of the
/// same run that the source lists (`previous_checkpoints`), when the source lies in
/// OUT/checkpoints. Only those are ever pruned or replaced: any other file there (an earlier run's
/// checkpoints, stray copies) is never deleted, whatever its step.
public final class Checkpointer {
    let out: String
    let keep: Int
    let policy: OnCheckpointError
    let dir: String
    public private(set) var lastPath: String?
    /// The step of the last save attempt (same on every rank).
    public private(set) var lastStep: Int = -1
    /// File names of the run's own checkpoints in `dir`, oldest first (rank 0).
    public private(set) var owned: [String] = []

    public init(config: TrainConfig) {
        out = config.out
        keep = config.keep
        policy = config.onCheckpointError
        dir = (config.out as NSString).appendingPathComponent(Checkpoint.directoryName)
    }

    /// After a resume from `c`: when it lies in this run's checkpoint folder, it and the earlier
    /// checkpoints it lists that still exist become the run's own (a resumed run is the same run).
    public func adopt(_ c: Checkpoint.Loaded) {
        let name = (c.file.path as NSString).lastPathComponent
        guard Checkpoint.step(fromFileName: name) != nil,
              Checkpointer.sameDirectory((c.file.path as NSString).deletingLastPathComponent, dir) else { return }
        var names = (c.metadata.previousCheckpoints ?? []).filter {
            var st = stat()
            return lstat((dir as NSString).appendingPathComponent($0), &st) == 0 && st.st_mode & S_IFMT == S_IFREG
        }
        names.append(name)
        owned = names
    }

    static func sameDirectory(_ a: String, _ b: String) -> Bool {
        guard let ra = realpath(a, nil) else { return false }
        defer { free(ra) }
        guard let rb = realpath(b, nil) else { return false }
        defer { free(rb) }
        return strcmp(ra, rb) == 0
    }

    public func save(_ t: Trainer, reason: String) throws {
        lastStep = t.position.step
        var failure: AETError? = nil
        if t.comm.isRoot {
            do {
                try write(t)
            } catch let e as AETError {
                failure = e
            } catch {
                failure = AETError.io("checkpoint: \(error)")
            }
        }
        if let f = failure, policy == .continue, reason != "preempt" {
            printError("warning: checkpoint not written at step \(t.position.step): \(f.message); the previous checkpoint is kept (--on-checkpoint-error continue)")
            failure = nil
        }
        // The other ranks wait here while rank 0 writes: not a stall (untimed by the watchdog).
        try t.comm.waitingForRoot {
            try t.comm.agree(failure.map { AETError("checkpoint failed at step \(t.position.step): \($0.message)", exitCode: $0.exitCode) },
                             what: "checkpoint")
        }
    }

    /// Rank 0: encodes and writes the checkpoint of the current position, then prunes the run's
    /// own checkpoints beyond the newest --keep.
    func write(_ t: Trainer) throws {
        let name = Checkpoint.fileName(step: t.position.step)
        let path = (dir as NSString).appendingPathComponent(name)
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw AETError.io("\(dir): cannot create directory: \(String(cString: strerror(errno)))")
        }
        var st = stat()
        if !owned.contains(name) && lstat(path, &st) == 0 {
            throw AETError.io("\(path) exists and was not written by this run; not replacing it (move it away, or use another --out)")
        }
        let kept = Array(owned.filter { $0 != name }.suffix(keep - 1))
        let data = try Checkpoint.encode(model: t.model, adam: t.adam, position: t.position, config: t.config,
                                         worldSize: t.comm.size, epochLoss: t.log.epochLoss, previousCheckpoints: kept,
                                         monitorState: t.selector?.state)
        try AtomicFile.write(data, to: URL(fileURLWithPath: path))
        lastPath = path
        let dropped = owned.filter { !kept.contains($0) && $0 != name }
        owned = kept + [name]
        for f in dropped { unlink((dir as NSString).appendingPathComponent(f)) }
    }

    /// --resume auto: the newest checkpoint that validates; invalid ones are reported and skipped.
    public static func findLatestValid(out: String, report: (String) -> Void) -> Checkpoint.Loaded? {
        for path in Checkpoint.list(out: out) {
            do {
                return try Checkpoint.read(path)
            } catch let e as AETError {
                report("warning: skipping invalid checkpoint: \(e.message)")
            } catch {
                report("warning: skipping invalid checkpoint \(path): \(error)")
            }
        }
        return nil
    }
}
