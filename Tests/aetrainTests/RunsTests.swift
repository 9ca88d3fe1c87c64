import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Working with many runs (issue 17), end to end through the binary on real MNIST: a run
/// repeated from its OUT/config.json (and from the same keys in TOML) writes the same outputs;
/// flags override the file; bad files are one-line errors; `compare` on three runs; the best
/// checkpoint across a run that gets worse; early stopping at the evaluation Keras would stop
/// at; the pages in a real browser. Short runs (500 training images), about 40 s in all.
final class RunsTests: XCTestCase {
    static func base(_ mnist: String, limit: Int = 500) -> [String] {
        ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", String(limit), "--test-limit", "200"]
    }

    /// metrics.jsonl without the keys that measure time.
    static func metrics(_ out: String) -> [[String: String]] {
        AE.jsonLines(out + "/metrics.jsonl").map { l in
            var r: [String: String] = [:]
            for (k, v) in l where k != "samples_per_second" && k != "elapsed_seconds" { r[k] = "\(v)" }
            return r
        }
    }

    static let timingKeys: Set<String> = ["samples_per_second", "train_seconds", "wall_seconds", "report_seconds", "ms_per_step",
                                          "train_gflops", "peak_rss_mb", "peak_rss_mb_per_rank", "pss_mb_per_rank"]

    /// summary.json without timing keys, with OUT replaced in paths.
    static func summary(_ out: String) -> [String: String] {
        var r: [String: String] = [:]
        for (k, v) in AE.json(out + "/summary.json") ?? [:] where !timingKeys.contains(k) {
            r[k] = "\(v)".replacingOccurrences(of: out, with: "OUT")
        }
        return r
    }

    /// Every checkpoint file of a run: name → every tensor.
    static func checkpoints(_ out: String) throws -> [String: [String: [Float]]] {
        let dir = out + "/checkpoints"
        var r: [String: [String: [Float]]] = [:]
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) where f.hasSuffix(".safetensors") {
            r[f] = try AE.tensors(dir + "/" + f)
        }
        return r
    }

    /// The config stored in a checkpoint, without where the run was (out, data_dir).
    static func storedConfig(_ ckpt: String) throws -> [String: String] {
        let meta = try AE.metadata(ckpt)
        var c = JSON.parseObject(meta["config"] ?? "") ?? [:]
        c["out"] = nil
        c["dataDir"] = nil
        return c.mapValues { v in JSON.encode(["v": v]) }
    }

    /// config.json as TOML (null keys left out: null means "the default").
    static func toml(_ json: [String: Any]) -> String {
        json.keys.sorted().compactMap { k in
            let v = json[k]!
            if v is NSNull { return nil }
            if ReportFormat.isBool(v) { return "\(k) = \((v as? Bool) == true)" }
            if let s = v as? String { return "\(k) = \"\(s)\"" }
            return "\(k) = \(v)"
        }.joined(separator: "\n") + "\n"
    }

    /// Names of the tensors that are not the same bit for bit (or missing on one side).
    static func differingTensors(_ a: [String: [Float]], _ b: [String: [Float]]) -> [String] {
        Set(a.keys).union(b.keys).filter { k in a[k]?.map(\.bitPattern) != b[k]?.map(\.bitPattern) }.sorted()
    }

    func assertSameOutputs(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try String(contentsOfFile: a + "/config.json", encoding: .utf8),
                       try String(contentsOfFile: b + "/config.json", encoding: .utf8), "config.json", file: file, line: line)
        let ma = Self.metrics(a), mb = Self.metrics(b)
        XCTAssertGreaterThan(ma.count, 3, file: file, line: line)
        XCTAssertEqual(ma, mb, "metrics.jsonl (timing keys aside)", file: file, line: line)
        XCTAssertEqual(Self.summary(a), Self.summary(b), "summary.json (timing keys aside)", file: file, line: line)
        let ca = try Self.checkpoints(a), cb = try Self.checkpoints(b)
        XCTAssertEqual(ca.keys.sorted(), cb.keys.sorted(), "checkpoint files", file: file, line: line)
        XCTAssertFalse(ca.isEmpty, file: file, line: line)
        for (name, tensors) in ca {
            // Byte-identical floats: bit patterns (a NaN would differ from itself).
            XCTAssertEqual(Self.differingTensors(tensors, cb[name] ?? [:]), [], "\(name): tensors that differ", file: file, line: line)
            XCTAssertEqual(try Self.storedConfig(a + "/checkpoints/" + name), try Self.storedConfig(b + "/checkpoints/" + name),
                           "\(name): config in the metadata", file: file, line: line)
        }
    }

    /// A run repeated with `--config OUT/config.json` (and from the same keys in TOML) writes
    /// the same config.json, metrics (timing aside), summary and checkpoint tensors, best
    /// checkpoint included; so does a custom model stopped by --max-steps.
    func testConfigFileRepeatsARunExactly() throws {
        let mnist = try AE.requireMNIST()
        let a = AE.tempDir("cfg-a"), b = AE.tempDir("cfg-b"), c = AE.tempDir("cfg-c")
        let r = AE.run(Self.base(mnist, limit: 300) + [
            "--model", "deep32", "--latent", "8", "--noise", "gaussian:0.3", "--lr", "0.002", "--weight-decay", "1e-4", "--adamw",
            "--seed", "7", "--batch-size", "50", "--epochs", "3", "--log-every", "2", "--keep-best", "--early-stop", "5:0.001",
            "--val-split", "0.2", "--checkpoint-every", "4", "--keep", "10", "--no-report",
            "--lr-schedule", "cosine", "--warmup-steps", "3", "--out", a])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rb = AE.run(["--config", a + "/config.json", "--data-dir", mnist, "--out", b])
        XCTAssertEqual(rb.status, 0, rb.stderr)
        XCTAssertFalse(rb.stderr.contains("note:"), rb.stderr)
        try assertSameOutputs(a, b)
        XCTAssertNotNil(try Self.checkpoints(a)["best.safetensors"])

        let json = try XCTUnwrap(AE.json(a + "/config.json"))
        let tomlPath = AE.tempDir("cfg-toml") + "/run.toml"
        try Self.toml(json).write(toFile: tomlPath, atomically: true, encoding: .utf8)
        let rc = AE.run(["train", "--data-dir", mnist, "--out", c, "--config", tomlPath])
        XCTAssertEqual(rc.status, 0, rc.stderr)
        try assertSameOutputs(a, c)

        let d = AE.tempDir("cfg-d"), e = AE.tempDir("cfg-e")
        let rd = AE.run(Self.base(mnist, limit: 200) + ["--encoder", "64,16", "--latent", "4", "--activation", "tanh", "--loss", "bce",
                                                         "--max-steps", "5", "--batch-size", "32", "--log-every", "1", "--binarize",
                                                         "--no-report", "--out", d])
        XCTAssertEqual(rd.status, 0, rd.stderr)
        let re = AE.run(["--config", d + "/config.json", "--data-dir", mnist, "--out", e])
        XCTAssertEqual(re.status, 0, re.stderr)
        try assertSameOutputs(d, e)
        XCTAssertEqual(AE.json(e + "/summary.json")?["stop_reason"] as? String, "max_steps")
    }

    /// A flag on the command line wins over the file; what neither gives keeps its default.
    func testFlagsOverrideTheFile() throws {
        let mnist = try AE.requireMNIST()
        let dir = AE.tempDir("cfg-over")
        let file = dir + "/run.json"
        try "{\"lr\": 0.01, \"epochs\": 1, \"batch_size\": 64, \"binarize\": true, \"log_every\": 3, \"max_steps\": 4, \"no_report\": true}"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let out = dir + "/out"
        let r = AE.run(["--lr", "0.002", "--config", file, "--data-dir", mnist, "--dataset", "mnist", "--train-limit", "256",
                        "--test-limit", "64", "--out", out, "--batch-size", "32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let c = try XCTUnwrap(AE.json(out + "/config.json"))
        XCTAssertEqual(c["lr"] as? Double, 0.002, "the command line's --lr (before --config) wins")
        XCTAssertEqual(c["batch_size"] as? Int, 32)
        XCTAssertEqual(c["epochs"] as? Int, 1, "from the file")
        XCTAssertEqual(c["log_every"] as? Int, 3, "from the file")
        XCTAssertEqual(c["binarize"] as? Bool, true, "from the file")
        XCTAssertEqual(c["keep"] as? Int, 3, "in neither: the default")
        XCTAssertEqual(c["weight_decay"] as? Double, 0, "in neither: the default")
        let meta = try AE.metadata(try AE.checkpoint(out))
        let stored = try XCTUnwrap(JSON.parseObject(meta["config"] ?? ""))
        XCTAssertEqual((stored["adam"] as? [String: Any])?["lr"] as? Double, 0.002, "the run used it")
        XCTAssertEqual(stored["batchSize"] as? Int, 32)
        XCTAssertEqual(AE.json(out + "/summary.json")?["steps"] as? Int, 4)

        // With the subcommand named, and the flag after --config: the same.
        let out2 = dir + "/out2"
        let r2 = AE.run(["train", "--config", file, "--lr", "0.002", "--data-dir", mnist, "--dataset", "mnist", "--train-limit", "256",
                         "--test-limit", "64", "--out", out2, "--max-steps", "2"])
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertEqual(AE.json(out2 + "/config.json")?["lr"] as? Double, 0.002)
        XCTAssertEqual(AE.json(out2 + "/config.json")?["batch_size"] as? Int, 64, "from the file")
        XCTAssertEqual(AE.json(out2 + "/summary.json")?["steps"] as? Int, 2)
    }

    /// Bad config files: one line naming the file or key, exit 2 (content) or 3 (unreadable),
    /// on every rank under mpirun, before anything is trained.
    func testBadConfigFilesAreOneLineErrors() throws {
        let mnist = try AE.requireMNIST()
        let dir = AE.tempDir("cfg-bad")
        func write(_ name: String, _ text: String) throws -> String {
            try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
            return dir + "/" + name
        }
        let cases: [(String, String, Int32)] = [
            (try write("unknown.json", "{\"epochs\": 1, \"batchsize\": 64}"), "unknown key \"batchsize\" (did you mean \"batch_size\"?)", ExitCode.usage),
            (try write("type.toml", "epochs = \"three\"\n"), "key \"epochs\" must be an integer, not a string", ExitCode.usage),
            (try write("syntax.toml", "epochs = \n"), "not valid TOML", ExitCode.usage),
            (try write("value.json", "{\"lr\": -1}"), "--lr -1", ExitCode.usage),
            (dir + "/missing.json", "--config \(dir)/missing.json: file not found", ExitCode.badInput),
        ]
        for (path, text, code) in cases {
            let r = AE.run(["--config", path, "--data-dir", mnist, "--out", dir + "/out"])
            XCTAssertEqual(r.status, code, "\(path): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("error: ") && r.stderr.contains(text), "\(path): \(r.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out"), "nothing ran")
        let m = try AE.mpirun(2, ["--config", dir + "/unknown.json", "--data-dir", mnist, "--out", dir + "/out"], timeout: 60)
        XCTAssertFalse(m.timedOut)
        XCTAssertNotEqual(m.status, 0)
        XCTAssertTrue(m.stderr.contains("rank 1: error: --config") && m.stderr.contains("unknown key \"batchsize\""), m.stderr)
    }

    /// The one key table covers every option of `train` and `anomaly`: a flag added without a
    /// config key (or a key left after its flag went) fails here.
    func testEveryTrainOptionHasAConfigKey() throws {
        for command in ["train", "anomaly"] {
            let r = AE.run([command, "--experimental-dump-help"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let tool = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let args = try XCTUnwrap((tool["command"] as? [String: Any])?["arguments"] as? [[String: Any]])
            var options = Set<String>()
            for a in args {
                for n in (a["names"] as? [[String: Any]]) ?? [] where n["kind"] as? String == "long" {
                    if let name = n["name"] as? String, !["help", "version"].contains(name) { options.insert(name) }
                }
            }
            XCTAssertGreaterThan(options.count, 40)
            let keys = Set(RunConfigFile.keys.filter { command == "anomaly" || !$0.anomalyOnly }
                .map { String($0.flag.dropFirst(2)) })
            XCTAssertEqual(options.subtracting(keys).sorted(), [], "\(command) options without a config key in RunConfigFile.keys")
            XCTAssertEqual(keys.subtracting(options).sorted(), [], "config keys of no \(command) option")
        }
    }

    /// Three real runs (two learning rates, two seeds) compared: the page is well-formed, has one
    /// curve per run in every figure, marks exactly the keys that differ, carries the three
    /// reconstruction grids; stdout has the table. Then both pages in headless Chromium at
    /// 1280 px: no horizontal overflow, every image loads. A bad folder is exit 3 naming it.
    func testCompareThreeRunsAndBothPagesInABrowser() throws {
        let mnist = try AE.requireMNIST()
        let root = AE.tempDir("compare")
        let runs = [("lr-small", ["--lr", "0.001"]), ("lr-large", ["--lr", "0.01"]), ("seed-1", ["--lr", "0.001", "--seed", "1"])]
        for (name, flags) in runs {
            let r = AE.run(Self.base(mnist) + ["--batch-size", "50", "--epochs", "2", "--log-every", "2", "--out", root + "/" + name] + flags)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let page = root + "/compare.html"
        let r = AE.run(["compare"] + runs.map { root + "/" + $0.0 } + ["--output", page])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        for (name, _) in runs { XCTAssertTrue(lines.contains { $0.hasPrefix(name + " ") }, "stdout table lacks \(name): \(r.stdout)") }
        XCTAssertTrue(r.stdout.contains("  lr: lr-small 0.001, lr-large 0.01, seed-1 0.001"), r.stdout)
        XCTAssertTrue(r.stdout.contains("  seed: lr-small 0, lr-large 0, seed-1 1"), r.stdout)

        let html = try String(contentsOfFile: page, encoding: .utf8)
        let parser = XMLParser(data: Data(html.utf8))
        XCTAssertTrue(parser.parse(), "compare.html is not well-formed: \(parser.parserError.map { "\($0)" } ?? "")")
        XCTAssertFalse(html.contains("http://") || html.contains("https://") || html.contains("<script"), "self-contained, no network, no script")
        let diffRows = html.components(separatedBy: "<tr class=\"diff\"><th>").dropFirst().map { String($0.prefix { $0 != "<" }) }
        XCTAssertEqual(diffRows.sorted(), ["lr", "seed"])
        XCTAssertTrue(html.contains("<tr><th>batch_size</th>"), "a key that is the same everywhere is not marked")
        let svgs = try html.components(separatedBy: "src=\"data:image/svg+xml;base64,").dropFirst().map { part -> String in
            let b64 = String(part.prefix { $0 != "\"" })
            return String(decoding: try XCTUnwrap(Data(base64Encoded: b64)), as: UTF8.self)
        }
        XCTAssertEqual(svgs.count, 4, "loss and test MSE, by step and by wall time")
        for svg in svgs {
            XCTAssertTrue(XMLParser(data: Data(svg.utf8)).parse())
            for (name, _) in runs { XCTAssertTrue(svg.contains(">\(name)</text>"), "a figure lacks the curve of \(name)") }
            XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, runs.count, "one line per run")
        }
        XCTAssertEqual(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1, 3, "three reconstruction grids")

        let c = try BrowserCheck.check(URL(fileURLWithPath: page), width: 1280)
        XCTAssertFalse(c.overflows, "compare.html is \(c.scrollWidth) px wide at 1280")
        XCTAssertEqual(c.scrolledBoxes, 0, "a table of compare.html scrolls sideways at 1280 px")
        XCTAssertEqual(c.images.count, 7)
        XCTAssertEqual(c.brokenImages, [])
        let report = URL(fileURLWithPath: root + "/lr-small/report/report.html")
        let p = try BrowserCheck.check(report, width: 1280)
        XCTAssertFalse(p.overflows, "report.html is \(p.scrollWidth) px wide at 1280")
        XCTAssertEqual(p.scrolledBoxes, 0, "a table of report.html scrolls sideways at 1280 px")
        XCTAssertGreaterThanOrEqual(p.images.count, 3)
        XCTAssertEqual(p.brokenImages, [])
        let rhtml = try String(contentsOf: report, encoding: .utf8)
        for k in ["test MSE (per pixel)", "PCA, 3 components", "mean image", "training samples/s", "wall time", "ranks"] {
            XCTAssertTrue(rhtml.contains(k), "report headline lacks \(k)")
        }
        XCTAssertTrue(rhtml.contains("<th>batch_size</th><td>50</td>"), "config as snake_case")

        for (bad, text) in [(root + "/nope", root + "/nope: no such run folder"),
                            (root + "/lr-small/checkpoints", root + "/lr-small/checkpoints: not a finished run folder (no summary.json)")] {
            let e = AE.run(["compare", root + "/lr-small", bad, "--output", root + "/x.html"])
            XCTAssertEqual(e.status, ExitCode.badInput, e.stderr)
            XCTAssertEqual(e.stderr, "error: \(text)\n")
        }
    }

    /// --keep-best across a run whose test MSE goes up late (lr 0.05): best.safetensors is the
    /// checkpoint of the evaluation with the lowest test MSE, not the last; eval reads the same
    /// MSE from it; it survives --keep 1 pruning and loads in the safetensors package; a run
    /// stopped at its best and resumed keeps that best.
    func testKeepBestKeepsTheLowestTestMSE() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("best")
        let flags = Self.base(mnist) + ["--lr", "0.05", "--batch-size", "25", "--epochs", "9", "--keep-best", "--keep", "1", "--no-report"]
        let r = AE.run(flags + ["--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let evals = AE.jsonLines(out + "/metrics.jsonl").filter { $0["test_mse"] != nil }
        XCTAssertEqual(evals.count, 9)
        let mses = evals.map { ($0["test_mse"] as? Double) ?? .nan }
        let bestIndex = try XCTUnwrap(mses.indices.min { mses[$0] < mses[$1] })
        XCTAssertLessThan(bestIndex, evals.count - 1, "premise: test MSE must go up after its best (\(mses))")
        let bestStep = try XCTUnwrap(evals[bestIndex]["step"] as? Int)
        let best = out + "/checkpoints/best.safetensors"
        let meta = try AE.metadata(best)
        XCTAssertEqual(Int(meta["step"] ?? ""), bestStep)
        let s = try XCTUnwrap(AE.json(out + "/summary.json"))
        XCTAssertEqual(s["best_step"] as? Int, bestStep)
        XCTAssertEqual(s["best_value"] as? Double, mses[bestIndex])
        XCTAssertEqual(s["monitor"] as? String, "test_mse")
        XCTAssertEqual(s["monitor_split"] as? String, "test")
        XCTAssertEqual(s["best_checkpoint"] as? String, best)
        XCTAssertEqual(Checkpoint.list(out: out).count, 1, "--keep 1 pruned the step checkpoints, not best.safetensors")
        let ev = AE.run(["eval", "--checkpoint", best, "--data-dir", mnist, "--limit", "200"])
        XCTAssertEqual(ev.status, 0, ev.stderr)
        let mse = try XCTUnwrap(JSON.parseObject(ev.stdout)?["mse"] as? Double)
        // eval sizes its batches otherwise than training's evaluation: float summation order only.
        Compare.close("eval of best.safetensors against its evaluation line", mse, mses[bestIndex], rtol: 1e-5)
        XCTAssertEqual(AE.run(["info", best]).status, 0)
        let py = AE.exec(["python3", "-c", "import sys; from safetensors.numpy import load_file; t = load_file(sys.argv[1]); print(sorted(t)[0], t['encoder.0.weight'].shape)", best], timeout: 60)
        XCTAssertEqual(py.status, 0, "python3 with safetensors is needed (Launch/test.sh installs it): \(py.stderr)")
        XCTAssertTrue(py.stdout.contains("(128, 784)"), py.stdout)

        // Stopped at the best evaluation and resumed: every later evaluation is worse, so only
        // the best carried in the checkpoint's metadata keeps the same best, step and file.
        let cut = AE.tempDir("best-resumed")
        XCTAssertEqual(AE.run(flags + ["--out", cut, "--max-steps", String(bestStep)]).status, 0)
        let resumed = AE.run(flags + ["--out", cut, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let s2 = try XCTUnwrap(AE.json(cut + "/summary.json"))
        XCTAssertEqual(s2["best_step"] as? Int, bestStep)
        XCTAssertEqual(s2["best_value"] as? Double, mses[bestIndex])
        XCTAssertEqual(Self.differingTensors(try AE.tensors(cut + "/checkpoints/best.safetensors"), try AE.tensors(best)), [],
                       "best.safetensors of the resumed run")
    }

    /// --early-stop stops at the evaluation the Keras rule picks on the same run's values, and
    /// the run until then is the same run; MIN_DELTA 1 (no value can improve by that) stops
    /// after PATIENCE + 1 evaluations. With --val-split the monitor is the validation MSE, and
    /// the held-out images are not trained on.
    func testEarlyStoppingStopsAtTheRightEvaluation() throws {
        let mnist = try AE.requireMNIST()
        let full = AE.tempDir("es-full"), stopped = AE.tempDir("es-stop"), delta = AE.tempDir("es-delta")
        let flags = Self.base(mnist) + ["--lr", "0.05", "--batch-size", "25", "--epochs", "10", "--val-split", "0.2", "--no-report"]
        XCTAssertEqual(AE.run(flags + ["--out", full, "--monitor", "val_mse"]).status, 0)
        let vals = AE.jsonLines(full + "/metrics.jsonl").compactMap { $0["val_mse"] as? Double }
        XCTAssertEqual(vals.count, 10)
        // Keras EarlyStopping(patience=1, min_delta=0, mode="min") by hand.
        var best = Double.infinity, wait = 0, expected = vals.count
        for (i, v) in vals.enumerated() {
            if v < best { best = v; wait = 0 } else { wait += 1; if wait >= 1 { expected = i + 1; break } }
        }
        XCTAssertLessThan(expected, 10, "premise: the validation MSE must stall within 10 epochs (\(vals))")
        let r = AE.run(flags + ["--out", stopped, "--early-stop", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try XCTUnwrap(AE.json(stopped + "/summary.json"))
        XCTAssertEqual(s["stop_reason"] as? String, "early_stop")
        XCTAssertEqual(s["epochs_completed"] as? Int, expected)
        XCTAssertEqual(s["monitor"] as? String, "val_mse", "the default monitor with --val-split")
        XCTAssertEqual(s["monitor_split"] as? String, "validation")
        XCTAssertEqual(s["val_set_size"] as? Int, 100)
        XCTAssertEqual(s["train_set_size"] as? Int, 400, "the held-out 100 are not trained on")
        XCTAssertEqual(s["steps"] as? Int, expected * 16, "400 images at batch 25: 16 steps per epoch")
        XCTAssertEqual(Array(Self.metrics(full).prefix(Self.metrics(stopped).count)), Self.metrics(stopped))
        XCTAssertEqual(AE.json(full + "/summary.json")?["stop_reason"] as? String, "epochs")

        let d = AE.run(flags + ["--out", delta, "--early-stop", "3:1"])
        XCTAssertEqual(d.status, 0, d.stderr)
        XCTAssertEqual(AE.json(delta + "/summary.json")?["epochs_completed"] as? Int, 4)
        // Under mpirun every rank takes the same decision (the evaluations are all-reduced):
        // no rank waits for another, and the run ends where one rank's does.
        let two = AE.tempDir("es-np2")
        let m = try AE.mpirun(2, flags + ["--out", two, "--early-stop", "3:1", "--keep-best"], timeout: 120)
        XCTAssertFalse(m.timedOut, "a rank kept training after another stopped")
        XCTAssertEqual(m.status, 0, m.stderr)
        let s2 = try XCTUnwrap(AE.json(two + "/summary.json"))
        XCTAssertEqual(s2["epochs_completed"] as? Int, 4)
        XCTAssertEqual(s2["stop_reason"] as? String, "early_stop")
        XCTAssertEqual(s2["world_size"] as? Int, 2)
        XCTAssertEqual(s2["val_set_size"] as? Int, 100)
        XCTAssertEqual(s2["best_step"] as? Int, AE.json(delta + "/summary.json")?["best_step"] as? Int)
        XCTAssertTrue(FileManager.default.fileExists(atPath: two + "/checkpoints/best.safetensors"))
        // A usage error for a validation monitor without a validation split.
        let u = AE.run(Self.base(mnist) + ["--monitor", "val_mse", "--out", AE.tempDir("es-bad")])
        XCTAssertEqual(u.status, ExitCode.usage)
        XCTAssertTrue(u.stderr.contains("--monitor val_mse: needs a validation split"), u.stderr)
    }
}
