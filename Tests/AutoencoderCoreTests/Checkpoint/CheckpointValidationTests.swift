import Foundation
import XCTest
@testable import AutoencoderCore

/// A checkpoint is validated as a whole before use (issue 14): format 2's checksum covers the
/// whole file, every metadata field is range-checked (`CheckpointMetadata`), the config must build
/// a model, the tensors must be exactly that model's, and every value must be finite.
final class CheckpointValidationTests: XCTestCase {
    let spec = ModelSpec.custom(hidden: [8], latent: 2, activation: .relu)

    var dir: String?

    func tempDir() throws -> String {
        if let dir { return dir }
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("aet-ckv-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        dir = d
        return d
    }

    /// A genuine checkpoint of a small model at step 6 (epoch 1, batch 2) with non-trivial moments.
    func genuine() throws -> (data: Data, config: TrainConfig, model: Autoencoder) {
        var config = TrainConfig(model: spec)
        config.dataset = .mnist
        config.batchSize = 64
        config.trainLimit = 256
        let model = try Autoencoder(spec: spec, objective: config.objective, maxBatch: 4)
        model.initialize(.torch, seed: 1)
        let adam = Adam(count: model.parameterCount, config: config.adam)
        for i in 0..<model.parameterCount {
            adam.m.pointer[i] = Float(i % 7) * 1e-3 - 3e-3
            adam.v.pointer[i] = Float(i % 5) * 1e-6
        }
        adam.step = 6
        var pos = RunPosition()
        pos.step = 6; pos.epoch = 1; pos.batchInEpoch = 2
        // Mid-epoch: the epoch's running loss (a sum that needs all 17 digits) and the run's
        // earlier checkpoints still kept (--keep 3: two besides this one).
        let data = try Checkpoint.encode(model: model, adam: adam, position: pos, config: config, worldSize: 2,
                                         epochLoss: (0.1 + 0.2, 128), previousCheckpoints: ["step-00000002.safetensors", "step-00000004.safetensors"])
        return (data, config, model)
    }

    /// Re-encodes `data` with edited metadata and values; the checksums are recomputed, so only
    /// the range checks can catch the edit. `format` 1: data checksum only; 2: whole file.
    func rewrite(_ data: Data, format: Int = 2, meta edit: (inout [String: String]) -> Void = { _ in },
                 values: (String, inout [Float]) -> Void = { _, _ in }, drop: String? = nil, add: String? = nil) throws -> Data {
        let f = try Safetensors.decode(data, path: "genuine")
        var meta = f.metadata
        meta["format_version"] = String(format)
        meta[Safetensors.fileChecksumKey] = nil
        edit(&meta)
        var arrays: [(String, [Int], [Float])] = []
        for t in f.tensors where t.name != drop {
            var v = try f.floats(t.name)
            values(t.name, &v)
            arrays.append((t.name, t.shape, v))
        }
        if let add { arrays.append((add, [1], [0])) }
        let flat = arrays.flatMap { $0.2 }
        return flat.withUnsafeBufferPointer { buf in
            var off = 0
            var list: [Safetensors.Tensor] = []
            for (name, shape, v) in arrays {
                list.append((name, shape, UnsafeBufferPointer(rebasing: buf[off ..< off + v.count])))
                off += v.count
            }
            return Safetensors.encode(tensors: list, metadata: meta, fileChecksum: format == 2)
        }
    }

    func write(_ data: Data, _ name: String) throws -> String {
        let p = try tempDir() + "/" + name + ".safetensors"
        try data.write(to: URL(fileURLWithPath: p))
        return p
    }

    func expectRejected(_ data: Data, _ cause: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let p = try write(data, what)
        _ = assertAETError(what, contains: [p + ": ", cause], exitCode: ExitCode.badInput, file: file, line: line) {
            _ = try Checkpoint.read(p)
        }
    }

    func configEdit(_ meta: inout [String: String], _ body: (inout [String: Any]) -> Void) {
        var c = try! JSONSerialization.jsonObject(with: Data(meta["config"]!.utf8)) as! [String: Any]
        body(&c)
        meta["config"] = String(decoding: try! JSONSerialization.data(withJSONObject: c, options: [.sortedKeys]), as: UTF8.self)
    }

    func testGenuineCheckpointRoundTripsItsTypedMetadata() throws {
        let (data, config, model) = try genuine()
        let p = try write(data, "good")
        let c = try Checkpoint.read(p)
        XCTAssertEqual(c.metadata.formatVersion, 2)
        XCTAssertEqual(c.metadata.step, 6)
        XCTAssertEqual(c.metadata.epoch, 1)
        XCTAssertEqual(c.metadata.batchInEpoch, 2)
        XCTAssertEqual(c.metadata.adamStep, 6)
        XCTAssertEqual(c.metadata.worldSize, 2)
        XCTAssertEqual(c.metadata.model, "custom")
        XCTAssertEqual(c.metadata.dataset, .mnist)
        XCTAssertEqual(c.metadata.config, config)
        XCTAssertEqual(c.metadata.aetrainVersion, aetrainVersion)
        XCTAssertEqual(c.metadata.epochLossSum, 0.1 + 0.2)  // bit for bit
        XCTAssertEqual(c.metadata.epochLossCount, 128)
        XCTAssertEqual(c.metadata.previousCheckpoints, ["step-00000002.safetensors", "step-00000004.safetensors"])
        XCTAssertEqual(c.file.metadata["previous_checkpoints"], "step-00000002.safetensors,step-00000004.safetensors")
        XCTAssertEqual(c.layout.parameterCount, model.parameterCount)
        // The typed struct and the string map are the same contract, both ways.
        XCTAssertEqual(try CheckpointMetadata(strings: c.metadata.strings, path: p), c.metadata)
        XCTAssertEqual(c.metadata.strings, c.file.metadata)
        // And it is Codable with the metadata's own key names.
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c.metadata)) as! [String: Any]
        XCTAssertEqual(Set(json.keys), Set(c.file.metadata.keys))
        // Restored values are the written ones.
        let m2 = try Autoencoder(spec: spec, objective: config.objective, maxBatch: 1)
        let a2 = Adam(count: m2.parameterCount, config: config.adam)
        try Checkpoint.restore(c, into: m2, adam: a2)
        XCTAssertEqual(m2.params.array, model.params.array)
        XCTAssertEqual(a2.step, 6)
        // Format 1 (data checksum only) is still read.
        let v1 = try write(try rewrite(data, format: 1), "v1")
        XCTAssertEqual(try Checkpoint.read(v1).metadata.formatVersion, 1)
    }

    func testEveryMetadataFieldIsRangeChecked() throws {
        let (data, _, _) = try genuine()
        let cases: [(String, (inout [String: String]) -> Void, String)] = [
            ("format 3", { $0["format_version"] = "3" }, "format_version 3"),
            ("format text", { $0["format_version"] = "two" }, "format_version 'two' is not an integer"),
            ("step missing", { $0["step"] = nil }, "lacks step"),
            ("step negative", { $0["step"] = "-1" }, "step -1"),
            ("step huge", { $0["step"] = String(Int.max) }, "step \(Int.max)"),
            ("step overflow", { $0["step"] = "99999999999999999999" }, "is not an integer"),
            ("epoch negative", { $0["epoch"] = "-1" }, "epoch -1"),
            ("epoch past step", { $0["epoch"] = "7" }, "epoch 7 exceeds step 6"),
            ("batch negative", { $0["batch_in_epoch"] = "-5" }, "batch_in_epoch -5"),
            ("batch past the epoch", { $0["batch_in_epoch"] = "4" }, "batch_in_epoch 4 is not below 4"),  // 256 / 64
            ("batch 10^15", { $0["batch_in_epoch"] = "1000000000000000" }, "batch_in_epoch 1000000000000000"),
            ("adam negative", { $0["adam_step"] = "-1" }, "adam_step -1"),
            ("adam past step", { $0["adam_step"] = "7" }, "adam_step 7"),
            ("world 0", { $0["world_size"] = "0" }, "world_size 0"),
            ("world past batch", { $0["world_size"] = "65" }, "world_size 65 exceeds the config's batch size 64"),
            ("model name", { $0["model"] = "mlp3" }, "model mlp3 differs"),
            ("dataset", { $0["dataset"] = "cifar10" }, "dataset 'cifar10'"),
            ("dataset mismatch", { $0["dataset"] = "fashion-mnist" }, "dataset fashion-mnist differs"),
            ("no config", { $0["config"] = nil }, "no config"),
            ("config not JSON", { $0["config"] = "{" }, "no readable config"),
            ("config lacks model", { m in self.configEdit(&m) { $0["model"] = nil } }, "model missing"),
            ("lr nan", { m in self.configEdit(&m) { c in var a = c["adam"] as! [String: Any]; a["lr"] = "nan"; c["adam"] = a } }, "--lr nan"),
            ("eps inf", { m in self.configEdit(&m) { c in var a = c["adam"] as! [String: Any]; a["eps"] = "inf"; c["adam"] = a } }, "--eps inf"),
            ("batch size 0", { m in self.configEdit(&m) { $0["batchSize"] = 0 } }, "--batch-size 0"),
            ("timeout nan", { m in self.configEdit(&m) { $0["collectiveTimeout"] = "nan" } }, "--collective-timeout nan"),
            ("normal class", { m in self.configEdit(&m) { $0["normalClass"] = 12 } }, "--normal-class 12"),
            ("empty encoder", { m in self.configEdit(&m) { c in var s = c["model"] as! [String: Any]; s["encoder"] = [Any](); c["model"] = s } },
             "the encoder has no layers"),
            ("loss sum alone", { $0["epoch_loss_count"] = nil }, "only one of epoch_loss_sum and epoch_loss_count"),
            ("loss sum text", { $0["epoch_loss_sum"] = "0.3x" }, "epoch_loss_sum '0.3x' is not a number"),
            ("loss sum nan", { $0["epoch_loss_sum"] = "nan" }, "epoch_loss_sum nan"),
            ("loss sum negative", { $0["epoch_loss_sum"] = "-0.5" }, "epoch_loss_sum -0.5"),
            ("loss count past the batches", { $0["epoch_loss_count"] = "129" }, "epoch_loss_count 129.0 is not a whole number in 0...128"),
            ("loss count fraction", { $0["epoch_loss_count"] = "2.5" }, "epoch_loss_count 2.5"),
            ("loss at an epoch end", { $0["batch_in_epoch"] = "0"; $0["epoch_loss_count"] = "0" }, "epoch_loss_sum at batch_in_epoch 0"),
            ("previous path", { $0["previous_checkpoints"] = "../../etc/passwd" }, "previous_checkpoints entry '../../etc/passwd'"),
            ("previous later", { $0["previous_checkpoints"] = "step-00000007.safetensors" }, "previous_checkpoints entry 'step-00000007.safetensors'"),
            ("previous itself", { $0["previous_checkpoints"] = "step-00000006.safetensors" }, "entry 'step-00000006.safetensors'"),
            ("previous descending", { $0["previous_checkpoints"] = "step-00000004.safetensors,step-00000002.safetensors" }, "entry 'step-00000002.safetensors'"),
            ("previous empty entry", { $0["previous_checkpoints"] = "step-00000002.safetensors," }, "entry ''"),
            ("previous past --keep", { $0["previous_checkpoints"] = "step-00000001.safetensors,step-00000002.safetensors,step-00000004.safetensors" },
             "previous_checkpoints lists 3 files; --keep 3"),
        ]
        for format in [1, 2] {
            for (what, edit, cause) in cases {
                try expectRejected(try rewrite(data, format: format, meta: edit), cause, "v\(format) \(what)")
            }
        }
        // The file-level checksum is required in format 2, the data checksum in format 1.
        try expectRejected(try rewrite(data, format: 1, meta: { $0["format_version"] = "2" }), "missing file_sha256", "format 2 without file_sha256")
    }

    func testConfigsThatCannotBuildAModelAreErrorsNeverTraps() throws {
        let mlp = ModelSpec.preset("mlp3")!
        var bad: [(String, ModelSpec, String)] = []
        var s = mlp; s.encoder = []; bad.append(("empty encoder", s, "encoder has no layers"))
        s = mlp; s.decoder = []; bad.append(("empty decoder", s, "decoder has no layers"))
        s = mlp; s.encoder[0] = .dense(units: 0, activation: .relu); bad.append(("0 units", s, "dense layer of 0 units"))
        s = mlp; s.encoder[0] = .dense(units: -4, activation: .relu); bad.append(("-4 units", s, "dense layer of -4 units"))
        s = mlp; s.encoder[0] = .dense(units: 1 << 40, activation: .relu); bad.append(("2^40 units", s, "units"))
        s = mlp; s.encoder = [.dense(units: 1 << 28, activation: .relu), .dense(units: 1 << 28, activation: .relu), .dense(units: 3, activation: .identity)]
        bad.append(("2^56 parameters", s, "parameters"))
        s = ModelSpec.preset("conv")!; s.encoder[0] = .conv(channels: 4, kernel: 2, activation: .relu); bad.append(("even kernel", s, "conv kernel 2"))
        s = ModelSpec.preset("conv")!; s.encoder[0] = .conv(channels: 0, kernel: 3, activation: .relu); bad.append(("0 channels", s, "0 channels"))
        s = ModelSpec.preset("conv")!; s.decoder = Array(repeating: .upsample, count: 70) + [.conv(channels: 1, kernel: 3, activation: .identity)]
        bad.append(("70 upsamplings", s, "out of range"))
        s = ModelSpec.preset("conv")!; s.encoder = [.maxPool, .maxPool, .maxPool]; bad.append(("odd pooling", s, "maxpool needs an even"))
        s = ModelSpec.preset("lstm")!; s.encoder = [.lstmEncoder(hidden: 0)]; bad.append(("LSTM 0", s, "LSTM of 0 hidden"))
        s = ModelSpec.preset("vae")!; s.encoder[s.encoder.count - 1] = .dense(units: 3, activation: .identity); bad.append(("odd VAE code", s, "2·latent"))
        s = mlp; s.decoder[s.decoder.count - 1] = .dense(units: 700, activation: .identity); bad.append(("decoder size", s, "700 values"))
        s = ModelSpec.preset("contractive")!; s.encoder[0] = .dense(units: 256, activation: .relu); bad.append(("contractive relu", s, "dense sigmoid"))
        for (what, spec, cause) in bad {
            _ = assertAETError(what, contains: [cause]) { _ = try Autoencoder.layout(spec) }
            _ = assertAETError(what + " (init)", contains: [cause]) { _ = try Autoencoder(spec: spec, objective: Objective(), maxBatch: 1) }
        }
        // Every preset builds, and the layout agrees with the model.
        for p in ModelSpec.presets {
            let l = try Autoencoder.layout(p)
            let m = try Autoencoder(spec: p, objective: Objective(), maxBatch: 2)
            XCTAssertEqual(l.parameterCount, m.parameterCount, p.name)
            XCTAssertEqual(l.tensors.map(\.name), m.tensors.map(\.name), p.name)
            XCTAssertGreaterThan(l.estimatedBytes(maxBatch: 2), Double(16 * m.parameterCount), p.name)
            XCTAssertGreaterThan(l.estimatedBytes(maxBatch: 200), l.estimatedBytes(maxBatch: 2), p.name)
        }
    }

    func testNonFiniteValuesAndNegativeSecondMomentsAreRejected() throws {
        let (data, _, model) = try genuine()
        let w = model.tensors[0].name, b = model.tensors[1].name
        for (tensor, value, cause) in [(w, Float.nan, "NaN or Inf"), (b, Float.infinity, "NaN or Inf"),
                                       ("optimizer.exp_avg." + w, -Float.infinity, "NaN or Inf"),
                                       ("optimizer.exp_avg_sq." + b, Float.nan, "NaN or Inf"),
                                       ("optimizer.exp_avg_sq." + w, -1e-9, "negative")] {
            let d = try rewrite(data, values: { n, v in if n == tensor { v[v.count - 1] = value } })
            try expectRejected(d, "tensor \(tensor) holds \(cause)", "\(tensor) = \(value)")
        }
        // Negative first moments are fine.
        let ok = try rewrite(data, values: { n, v in if n == "optimizer.exp_avg." + w { v[0] = -5 } })
        XCTAssertNoThrow(try Checkpoint.read(try write(ok, "neg-m")))
    }

    func testTensorsMustBeExactlyTheModels() throws {
        let (data, _, model) = try genuine()
        let w = model.tensors[0].name
        try expectRejected(try rewrite(data, drop: "optimizer.exp_avg_sq." + w), "tensor optimizer.exp_avg_sq.\(w) missing", "missing moment")
        try expectRejected(try rewrite(data, drop: w), "tensor \(w) missing", "missing weight")
        try expectRejected(try rewrite(data, add: "encoder.9.weight"), "unexpected tensor 'encoder.9.weight'", "extra tensor")
        // A config whose model has other shapes than the tensors.
        try expectRejected(try rewrite(data, meta: { m in self.configEdit(&m) { c in
            var s = c["model"] as! [String: Any]
            var enc = s["encoder"] as! [Any]
            enc[0] = ["dense": ["units": 9, "activation": "relu"]]
            s["encoder"] = enc
            c["model"] = s
        } }), "has shape [8, 784], the model needs [9, 784]", "other shapes")
    }

    /// Format 2: changing any single byte of the header (length prefix, tensor table, metadata,
    /// padding, the checksum itself) or of the data makes the file invalid.
    func testFormat2ChecksumCoversEveryByte() throws {
        let (data, _, _) = try genuine()
        let headerEnd = 8 + Int(data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        var positions = Array(0 ..< headerEnd)
        positions += stride(from: headerEnd, to: data.count, by: 997).map { $0 }
        var accepted: [Int] = []
        for i in positions {
            // 0x20 turns a hex digit of a checksum into upper case, a space into NUL.
            for flip: UInt8 in [0x01, 0x20] {
                var d = data
                d[d.startIndex + i] ^= flip
                if (try? Checkpoint.validate(Safetensors.decode(d, path: "flip", requireChecksum: true))) != nil { accepted.append(i) }
            }
        }
        XCTAssertNoThrow(try Checkpoint.validate(Safetensors.decode(data, path: "genuine", requireChecksum: true)))
        XCTAssertEqual(accepted, [], "changed bytes accepted at offsets \(accepted.prefix(10))")
        // Format 1 covers the data only: an edited header field with a valid data checksum is
        // caught only by the range checks, which is why format 2 exists.
        XCTAssertNoThrow(try Checkpoint.read(try write(try rewrite(data, format: 1, meta: { $0["aetrain_version"] = "9.9" }), "v1-edit")))
    }
}
