import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// `--config FILE` (RunConfigFile): reading JSON and TOML into the flags they stand for, the
/// errors (each names the key), what OUT/config.json holds; and the selection rules of
/// --early-stop / --keep-best (ModelSelector) on given sequences of values.
final class ConfigFileTests: XCTestCase {
    func args(_ text: String, toml: Bool = false, anomaly: Bool = false) throws -> [String] {
        try RunConfigFile.arguments(RunConfigFile.parse(text, toml: toml, name: "cfg"), file: "cfg", anomaly: anomaly)
    }

    func usageError(_ text: String, toml: Bool = false, anomaly: Bool = false, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let a = try args(text, toml: toml, anomaly: anomaly)
            XCTFail("no error for \(text): \(a)", file: file, line: line)
            return ""
        } catch let e as AETError {
            XCTAssertEqual(e.exitCode, ExitCode.usage, e.message, file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), "one line: \(e.message)", file: file, line: line)
            return e.message
        } catch {
            XCTFail("\(error)", file: file, line: line)
            return ""
        }
    }

    func testJSONAndTOMLGiveTheSameFlags() throws {
        let json = """
        {"batch_size": 256, "lr": 0.003, "adamw": true, "binarize": false, "encoder": [256, 64], "latent": 8,
         "max_steps": null, "early_stop": 3, "noise": "gaussian:0.5", "grad_sync": "allreduce", "weight_decay": 0,
         "seed": 18446744073709551615}
        """
        let toml = """
        # the same run
        batch_size = 256
        lr = 0.003
        adamw = true
        binarize = false
        encoder = "256,64"
        latent = 8
        early_stop = "3"
        noise = "gaussian:0.5"
        grad_sync = "allreduce"
        weight_decay = 0
        seed = 18446744073709551615
        """
        let expected = ["--adamw", "--batch-size=256", "--early-stop=3", "--encoder=256,64", "--grad-sync=allreduce",
                        "--latent=8", "--lr=0.003", "--noise=gaussian:0.5", "--seed=18446744073709551615", "--weight-decay=0"]
        XCTAssertEqual(try args(json), expected)
        // TOML integers are 64-bit signed: the largest seed is written as a string there.
        XCTAssertEqual(try args(toml.replacingOccurrences(of: "seed = 18446744073709551615", with: "seed = 9223372036854775807"), toml: true),
                       expected.map { $0 == "--seed=18446744073709551615" ? "--seed=9223372036854775807" : $0 })
    }

    func testUnknownKeysAndWrongTypesNameTheKey() {
        var m = usageError("{\"batchsize\": 64}")
        XCTAssertTrue(m.contains("unknown key \"batchsize\"") && m.contains("did you mean \"batch_size\""), m)
        m = usageError("{\"config\": \"other.json\"}")
        XCTAssertTrue(m.contains("unknown key \"config\""), m)
        m = usageError("{\"normal_class\": 3}")
        XCTAssertTrue(m.contains("\"normal_class\" is for aetrain anomaly only"), m)
        XCTAssertEqual(try args("{\"normal_class\": 3}", anomaly: true), ["--normal-class=3"])
        for (text, key, expected, got) in [
            ("{\"batch_size\": \"256\"}", "batch_size", "an integer", "a string"),
            ("{\"batch_size\": 1.5}", "batch_size", "an integer", "a number with a fraction"),
            ("{\"lr\": true}", "lr", "a number", "a boolean"),
            ("{\"adamw\": 1}", "adamw", "true or false", "an integer"),
            ("{\"noise\": 0.5}", "noise", "a string", "a number with a fraction"),
            ("{\"encoder\": [256, \"x\"]}", "encoder", "layer widths", "an array"),
            ("{\"model\": {\"name\": \"mlp3\"}}", "model", "a string", "a table"),
            ("lr = 2026-01-01", "lr", "a number", "a date"),
        ] {
            m = usageError(text, toml: text.hasPrefix("lr ="))
            XCTAssertTrue(m.contains("key \"\(key)\" must be \(expected)") && m.contains("not \(got)"), m)
        }
        m = usageError("{\"dataset\": \"cifar10\"}")
        XCTAssertTrue(m.contains("key \"dataset\" is \"cifar10\"; expected one of \"fashion-mnist\", \"mnist\""), m)
        m = usageError("{\"monitor\": \"val_loss\"}")
        XCTAssertTrue(m.contains("\"monitor\"") && m.contains("\"val_mse\""), m)
    }

    func testSyntaxErrorsNameTheFile() {
        var m = usageError("{\"lr\": 0.1 \"epochs\": 2}")
        XCTAssertTrue(m.hasPrefix("--config cfg: not valid JSON"), m)
        m = usageError("[1, 2]")
        XCTAssertTrue(m.contains("is an array, not an object of keys"), m)
        m = usageError("lr = \nepochs = 3", toml: true)
        XCTAssertTrue(m.hasPrefix("--config cfg: not valid TOML") && m.contains("line 1"), m)
    }

    func testReadingAFileThatIsNotThere() throws {
        XCTAssertThrowsError(try RunConfigFile.read("/nonexistent/run.toml")) { e in
            XCTAssertEqual((e as? AETError)?.exitCode, ExitCode.badInput)
            XCTAssertTrue((e as? AETError)?.message.contains("/nonexistent/run.toml") ?? false, "\(e)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try RunConfigFile.read(dir.path)) { e in XCTAssertEqual((e as? AETError)?.exitCode, ExitCode.badInput) }
        let toml = dir.appendingPathComponent("a.TOML")
        try Data("epochs = 2\nlr = 1e-3\n".utf8).write(to: toml)
        XCTAssertEqual(try RunConfigFile.arguments(RunConfigFile.read(toml.path), file: toml.path, anomaly: false), ["--epochs=2", "--lr=0.001"])
    }

    /// OUT/config.json holds exactly the table's `written` keys (normal_class only for anomaly),
    /// and each value it writes reads back as a valid flag.
    func testWrittenConfigHasTheTableKeysAndReadsBack() throws {
        let written = Set(RunConfigFile.keys.filter { $0.use == .written && !$0.anomalyOnly }.map(\.key))
        for name in ["mlp3", "denoising", "sparse-kl", "vae", "conv"] {
            var c = TrainConfig(model: ModelSpec.preset(name)!)
            c.noise = ModelSpec.preset(name)!.defaultNoise.flatMap { try? NoiseSpec(parsing: $0) }
            let o = RunConfigFile.written(c)
            XCTAssertEqual(Set(o.keys), written, name)
            let text = RunConfigFile.text(c)
            XCTAssertNoThrow(try args(text), name)
            c.normalClass = 4
            XCTAssertEqual(Set(RunConfigFile.written(c).keys), written.union(["normal_class"]))
        }
        var custom = TrainConfig(model: ModelSpec.custom(hidden: [64, 16], latent: 5, activation: .tanh))
        custom.objective.sparsityWeight = 0.003
        custom.selection = ModelSelection(keepBest: true, monitor: .valBCE, earlyStop: EarlyStop(patience: 4, minDelta: 0.001), valSplit: 0.1)
        custom.lrSchedule = LRSchedule(kind: .step(every: 10, gamma: 0.5), warmupSteps: 5, scaleLR: true)
        let a = try args(RunConfigFile.text(custom))
        for flag in ["--lr-schedule=step:10:0.5", "--warmup-steps=5", "--scale-lr", "--model=custom", "--encoder=64,16", "--latent=5", "--activation=tanh", "--keep-best", "--monitor=val_bce",
                     "--early-stop=4:0.001", "--val-split=0.1", "--sparsity-weight=0.003"] {
            XCTAssertTrue(a.contains(flag), "\(flag) not in \(a)")
        }
        var preset = TrainConfig(model: try ModelSpec.preset("deep32")!.withLatent(8))
        preset.maxSteps = 7
        let p = try args(RunConfigFile.text(preset))
        XCTAssertTrue(p.contains("--latent=8") && p.contains("--model=deep32") && p.contains("--max-steps=7"), "\(p)")
        XCTAssertFalse(try args(RunConfigFile.text(TrainConfig(model: ModelSpec.preset("deep32")!))).contains { $0.hasPrefix("--latent") })
    }

    func testEarlyStopFlag() throws {
        XCTAssertEqual(try EarlyStop(parsing: "3"), EarlyStop(patience: 3, minDelta: 0))
        XCTAssertEqual(try EarlyStop(parsing: "2:0.001"), EarlyStop(patience: 2, minDelta: 0.001))
        for bad in ["0", "-1", "x", "3:", "3:-0.1", "3:nan", "3:inf", ""] {
            XCTAssertThrowsError(try EarlyStop(parsing: bad), bad) { e in
                XCTAssertEqual((e as? AETError)?.exitCode, ExitCode.usage)
                XCTAssertTrue((e as? AETError)?.message.hasPrefix("--early-stop") ?? false)
            }
        }
        XCTAssertThrowsError(try ModelSelection.resolve(keepBest: false, monitor: .valMSE, earlyStop: nil, valSplit: nil))
        XCTAssertThrowsError(try ModelSelection.resolve(keepBest: true, monitor: nil, earlyStop: nil, valSplit: 1))
        XCTAssertThrowsError(try ModelSelection.resolve(keepBest: true, monitor: nil, earlyStop: nil, valSplit: .nan))
        XCTAssertNil(try ModelSelection.resolve(keepBest: false, monitor: nil, earlyStop: nil, valSplit: nil))
        XCTAssertEqual(try ModelSelection.resolve(keepBest: true, monitor: nil, earlyStop: nil, valSplit: 0.2)?.monitor, .valMSE)
        XCTAssertEqual(try ModelSelection.resolve(keepBest: true, monitor: nil, earlyStop: nil, valSplit: nil)?.monitor, .testMSE)
        XCTAssertEqual(try ModelSelection.validationCount(0.25, of: 512), 128)
        XCTAssertEqual(try ModelSelection.validationCount(nil, of: 512), 0)
        XCTAssertThrowsError(try ModelSelection.validationCount(0.001, of: 100))
        XCTAssertThrowsError(try ModelSelection.validationCount(0.999, of: 100))
    }

    /// Keras EarlyStopping (mode min) on a sequence, computed by hand: with min_delta 0.02,
    /// 0.49 is not an improvement on 0.5, 0.45 is; with patience 2 the run stops at the 6th.
    /// The best (save_best_only) is strict and ignores min_delta; NaN never improves.
    func testEarlyStoppingFollowsKeras() {
        let s = ModelSelector(ModelSelection(keepBest: true, earlyStop: EarlyStop(patience: 2, minDelta: 0.02)), out: "/tmp/x")
        let values = [0.5, 0.49, 0.45, 0.44, 0.449, 0.3]
        var stoppedAt: Int? = nil
        for (i, v) in values.enumerated() where stoppedAt == nil {
            s.record(v, step: 10 * (i + 1), epoch: i + 1, atEpochEnd: true)
            if s.stopped { stoppedAt = i + 1 }
        }
        XCTAssertEqual(stoppedAt, 5)
        XCTAssertEqual(s.state.best, 0.44)
        XCTAssertEqual(s.state.bestStep, 40)
        XCTAssertEqual(s.state.earlyStopBest, 0.45)
        XCTAssertEqual(s.state.wait, 2)

        let n = ModelSelector(ModelSelection(earlyStop: EarlyStop(patience: 3)), out: "/tmp/x")
        for v in [0.3, .nan, 0.3, 0.2, .nan, .infinity] { n.record(v, step: 1, epoch: 1, atEpochEnd: true) }
        XCTAssertEqual(n.state.best, 0.2)
        XCTAssertEqual(n.state.wait, 2, "NaN, Inf and an equal value are not improvements")
        XCTAssertFalse(n.stopped)
        // An evaluation between epoch ends may set the best but does not count for patience.
        n.record(0.25, step: 2, epoch: 2, atEpochEnd: false)
        XCTAssertEqual(n.state.wait, 2)
        XCTAssertTrue(n.record(0.1, step: 3, epoch: 2, atEpochEnd: false))
        XCTAssertEqual(n.state.best, 0.1)
        XCTAssertEqual(n.state.wait, 2)
        n.record(0.2, step: 4, epoch: 3, atEpochEnd: true)
        XCTAssertTrue(n.stopped, "0.2 is not below the early-stopping reference 0.2: the third evaluation without improvement")
    }

    /// The monitor state travels in checkpoint metadata and is checked like every other field.
    func testMonitorStateInCheckpointMetadata() throws {
        var pos = RunPosition()
        pos.step = 40; pos.epoch = 4
        var meta = CheckpointMetadata(position: pos, adamStep: 40, worldSize: 1, config: TrainConfig(model: ModelSpec.preset("mlp3")!))
        var st = MonitorState(monitor: .valMSE)
        st.best = 0.0123; st.bestStep = 30; st.bestEpoch = 3; st.earlyStopBest = 0.0125; st.wait = 1
        meta.monitorState = st
        var strings = meta.strings
        strings["file_sha256"] = String(repeating: "0", count: 64)
        let back = try CheckpointMetadata(strings: strings, path: "c.safetensors")
        XCTAssertEqual(back.monitorState, st)
        for (bad, cause) in [("{\"monitor\":\"val_mse\",\"best\":0.1,\"best_step\":41,\"wait\":0}", "best_step 41 out of range"),
                             ("{\"monitor\":\"val_mse\",\"wait\":-1}", "wait -1"),
                             ("{\"monitor\":\"nope\",\"wait\":0}", "monitor_state is not a readable"),
                             ("{\"monitor\":\"val_mse\",\"best\":0.1,\"wait\":0}", "best without best_step")] {
            var s = strings
            s["monitor_state"] = bad
            XCTAssertThrowsError(try CheckpointMetadata(strings: s, path: "c.safetensors"), bad) { e in
                let m = (e as? AETError)?.message ?? ""
                XCTAssertTrue(m.hasPrefix("c.safetensors: checkpoint metadata") && m.contains(cause), m)
                XCTAssertEqual((e as? AETError)?.exitCode, ExitCode.badInput)
            }
        }
    }
}
