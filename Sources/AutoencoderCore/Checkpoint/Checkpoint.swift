import Foundation

/// Checkpoints are safetensors files: the model tensors under PyTorch state_dict names
/// (`encoder.0.weight`, [out, in] row-major, F32), the Adam moments beside them under
/// `optimizer.exp_avg.<name>` and `optimizer.exp_avg_sq.<name>`, and string metadata:
/// format_version, step, epoch, batch_in_epoch, adam_step, world_size, model, dataset, config
/// (the resolved run config as JSON), aetrain_version and data_sha256 (checked on every load).
///
/// Data order, input noise and VAE samples come from counter-based streams keyed by
/// (seed, step, sample index), so (seed, epoch, batch_in_epoch, step) is the whole RNG state.
public enum Checkpoint {
    public static let formatVersion = "1"
    public static let directoryName = "checkpoints"

    public static func fileName(step: Int) -> String { String(format: "step-%08d.safetensors", step) }

    /// Encodes model, optimiser and position. Refuses non-finite parameters.
    public static func encode(model: Autoencoder, adam: Adam, position: RunPosition, config: TrainConfig,
                              worldSize: Int) throws -> Data {
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
        let meta: [String: String] = [
            "format_version": formatVersion,
            "step": String(position.step),
            "epoch": String(position.epoch),
            "batch_in_epoch": String(position.batchInEpoch),
            "adam_step": String(adam.step),
            "world_size": String(worldSize),
            "model": config.model.name,
            "dataset": config.dataset.rawValue,
            "config": config.json(),
            "aetrain_version": aetrainVersion,
        ]
        return Safetensors.encode(tensors: list, metadata: meta)
    }

    /// A validated checkpoint: parsed config and position, tensors checked against the model.
    public struct Loaded {
        public let file: SafetensorsFile
        public let config: TrainConfig
        public let position: RunPosition
        public let adamStep: Int
    }

    /// Reads and validates a checkpoint: header, offsets, checksum, metadata, and (when a model is
    /// given) that every tensor is present with the model's dtype and shape.
    public static func read(_ path: String) throws -> Loaded {
        let file = try Safetensors.read(URL(fileURLWithPath: path), requireChecksum: true)
        let m = file.metadata
        guard m["format_version"] == formatVersion else {
            throw AETError.data("\(path): unsupported checkpoint format_version \(m["format_version"] ?? "missing")")
        }
        guard let cj = m["config"], let cd = cj.data(using: .utf8),
              let config = try? TrainConfig.decoder.decode(TrainConfig.self, from: cd) else {
            throw AETError.data("\(path): checkpoint metadata has no readable config")
        }
        var pos = RunPosition()
        guard let s = m["step"].flatMap(Int.init), let e = m["epoch"].flatMap(Int.init),
              let b = m["batch_in_epoch"].flatMap(Int.init), let a = m["adam_step"].flatMap(Int.init) else {
            throw AETError.data("\(path): checkpoint metadata lacks step/epoch/batch_in_epoch/adam_step")
        }
        pos.step = s; pos.epoch = e; pos.batchInEpoch = b
        return Loaded(file: file, config: config, position: pos, adamStep: a)
    }

    /// Checks the tensors against `model` and copies parameters (and, if given, Adam moments) in.
    public static func restore(_ c: Loaded, into model: Autoencoder, adam: Adam?) throws {
        let path = c.file.path
        for t in model.tensors {
            var names = [t.name]
            if adam != nil { names += ["optimizer.exp_avg." + t.name, "optimizer.exp_avg_sq." + t.name] }
            for n in names {
                guard let info = c.file.tensor(n) else { throw AETError.data("\(path): tensor \(n) missing (different model?)") }
                guard info.dtype == "F32" else { throw AETError.data("\(path): tensor \(n) is \(info.dtype), expected F32") }
                guard info.shape == t.shape else {
                    throw AETError.data("\(path): tensor \(n) has shape \(info.shape), the model needs \(t.shape) (different model?)")
                }
            }
            try c.file.copyFloats(t.name, into: model.params.pointer + t.offset, count: t.count)
            if let adam {
                try c.file.copyFloats("optimizer.exp_avg." + t.name, into: adam.m.pointer + t.offset, count: t.count)
                try c.file.copyFloats("optimizer.exp_avg_sq." + t.name, into: adam.v.pointer + t.offset, count: t.count)
            }
        }
        if let adam { adam.step = c.adamStep }
    }

    /// Checkpoint files in `out`/checkpoints, newest step first.
    public static func list(out: String) -> [String] {
        let dir = (out as NSString).appendingPathComponent(directoryName)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".safetensors") }
            .sorted(by: >)
            .map { (dir as NSString).appendingPathComponent($0) }
    }
}

/// Rank 0 writes checkpoints (atomically) at epoch ends, every --checkpoint-every steps and on
/// preemption; it keeps the newest --keep files. Failures are agreed across ranks.
public final class Checkpointer {
    let out: String
    let keep: Int
    let policy: OnCheckpointError
    public private(set) var lastPath: String?
    /// The step of the last save attempt (same on every rank).
    public private(set) var lastStep: Int = -1

    public init(config: TrainConfig) {
        out = config.out
        keep = config.keep
        policy = config.onCheckpointError
    }

    public func save(_ t: Trainer, reason: String) throws {
        lastStep = t.position.step
        var failure: AETError? = nil
        if t.comm.isRoot {
            do {
                let data = try Checkpoint.encode(model: t.model, adam: t.adam, position: t.position, config: t.config,
                                                 worldSize: t.comm.size)
                let dir = (out as NSString).appendingPathComponent(Checkpoint.directoryName)
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                let path = (dir as NSString).appendingPathComponent(Checkpoint.fileName(step: t.position.step))
                try AtomicFile.write(data, to: URL(fileURLWithPath: path))
                lastPath = path
                prune()
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
        try t.comm.agree(failure.map { AETError("checkpoint failed at step \(t.position.step): \($0.message)", exitCode: $0.exitCode) },
                         what: "checkpoint")
    }

    func prune() {
        let files = Checkpoint.list(out: out)
        for f in files.dropFirst(keep) { unlink(f) }
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
