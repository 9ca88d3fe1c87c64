import XCTest
@testable import AutoencoderCore

/// The CLI contract: subcommands, defaults, output files and one-line errors.
final class CLITests: XCTestCase {
    func testHelpListsEverySubcommand() {
        let r = AE.run(["--help"])
        XCTAssertEqual(r.status, 0)
        for sub in ["train", "eval", "encode", "reconstruct", "info", "fetch", "models"] {
            XCTAssertTrue(r.stdout.contains(sub), "--help lacks \(sub)")
        }
        let t = AE.run(["train", "--help"])
        for flag in ["--dataset", "--data-dir", "--model", "--loss", "--epochs", "--max-steps", "--batch-size", "--lr",
                     "--weight-decay", "--seed", "--train-limit", "--test-limit", "--out", "--log-every", "--adamw",
                     "--beta1", "--beta2", "--eps", "--binarize", "--init", "--resume", "--keep", "--checkpoint-every"] {
            XCTAssertTrue(t.stdout.contains(flag), "train --help lacks \(flag)")
        }
    }

    func testModelsListsPresetsWithParameterCounts() {
        let r = AE.run(["models"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("mlp3") && r.stdout.contains("219891"), r.stdout)
        XCTAssertTrue(r.stdout.contains("shallow32") && r.stdout.contains("50992"), r.stdout)  // 784·32+32 + 32·784+784
        XCTAssertTrue(r.stdout.contains("deep32"))
    }

    func testBadFlagsGiveOneLineAndExitCode() throws {
        let mnist = try AE.requireMNIST()
        let cases: [([String], String, Int32)] = [
            (["--batch-size", "0"], "--batch-size 0", ExitCode.usage),
            (["--batch-size", "-5"], "--batch-size", ExitCode.usage),
            (["--lr", "0"], "--lr", ExitCode.usage),
            (["--lr", "-1"], "--lr", ExitCode.usage),
            (["--model", "nosuch"], "--model nosuch: unknown model", ExitCode.usage),
            (["--epochs", "abc"], "--epochs", ExitCode.usage),
            (["--loss", "hinge"], "--loss", ExitCode.usage),
            (["--noise", "pink:1"], "--noise pink:1", ExitCode.usage),
            (["--beta", "inf"], "--beta inf", ExitCode.usage),
            (["--lr", "nan"], "--lr nan", ExitCode.usage),
            (["--sparsity-target", "2"], "--sparsity-target 2", ExitCode.usage),
            (["--data-dir", "/nonexistent/dir"], "--data-dir /nonexistent/dir", ExitCode.badInput),
            (["--data-dir", mnist + "/train-images-idx3-ubyte.gz"], "is a file", ExitCode.badInput),
            (["--out", mnist + "/train-images-idx3-ubyte.gz/x"], "--out", ExitCode.io),
        ]
        for (extra, needle, code) in cases {
            var args = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--test-limit", "64", "--epochs", "1",
                        "--out", AE.tempDir("flags")]
            if extra.first == "--data-dir" || extra.first == "--out" {
                let i = args.firstIndex(of: extra[0])!
                args.removeSubrange(i...(i + 1))
            }
            let r = AE.run(args + extra, timeout: 60)
            XCTAssertEqual(r.status, code, "\(extra): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(extra): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(needle), "\(extra): \(r.stderr)")
        }
    }

    func testTruncatedDataFileGivesCleanErrorNamingTheFile() throws {
        let mnist = try AE.requireMNIST()
        let dir = AE.tempDir("trunc")
        for f in DatasetName.fileNames {
            try FileManager.default.copyItem(atPath: "\(mnist)/\(f).gz", toPath: "\(dir)/\(f).gz")
        }
        let path = "\(dir)/t10k-images-idx3-ubyte.gz"
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: path))
        let r = AE.run(["--dataset", "mnist", "--data-dir", dir, "--epochs", "1", "--out", dir + "/out"])
        XCTAssertEqual(r.status, ExitCode.badInput)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(path), r.stderr)
        let m = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", dir, "--epochs", "1", "--out", dir + "/out"], timeout: 60)
        XCTAssertFalse(m.timedOut)
        XCTAssertEqual(m.status, ExitCode.badInput)
        XCTAssertTrue(m.stderr.contains(path), m.stderr)
    }

    func testDefaultSubcommandIsTrainAndWritesTheContractFiles() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("contract")
        let r = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "1000", "--test-limit", "200",
                        "--epochs", "2", "--batch-size", "100", "--log-every", "5", "--out", out, "--no-report"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try XCTUnwrap(AE.json(out + "/summary.json"))
        for k in ["model", "dataset", "world_size", "epochs", "steps", "global_batch_size", "param_count", "train_loss",
                  "test_mse", "test_bce", "samples_per_second", "wall_seconds"] {
            XCTAssertNotNil(s[k], "summary.json lacks \(k)")
        }
        XCTAssertEqual(s["model"] as? String, "mlp3")
        XCTAssertEqual(s["steps"] as? Int, 20)
        XCTAssertEqual(s["world_size"] as? Int, 1)
        XCTAssertEqual(s["global_batch_size"] as? Int, 100)
        let lines = AE.jsonLines(out + "/metrics.jsonl")
        let steps = lines.filter { $0["test_mse"] == nil }
        let evals = lines.filter { $0["test_mse"] != nil }
        XCTAssertEqual(steps.map { $0["step"] as? Int }, [5, 10, 15, 20])
        for l in steps { for k in ["step", "epoch", "loss", "samples_per_second"] { XCTAssertNotNil(l[k], k) } }
        XCTAssertEqual(evals.count, 2)
        for l in evals { for k in ["epoch", "test_mse", "test_bce"] { XCTAssertNotNil(l[k], k) } }
        XCTAssertEqual(evals.last!["test_mse"] as! Double, s["test_mse"] as! Double, accuracy: 1e-12)
        // Training reduces the loss.
        XCTAssertLessThan(steps.last!["loss"] as! Double, steps.first!["loss"] as! Double)
    }

    func testFetchVerifiesChecksumsFromAMirror() throws {
        let mnist = try AE.requireMNIST()
        let dest = AE.tempDir("fetch")
        let r = AE.run(["fetch", "mnist", "--data-dir", dest, "--mirror", "file://" + mnist + "/"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr.components(separatedBy: "checksum ok").count - 1, 4, r.stderr)
        let offline = AE.run(["fetch", "mnist", "--data-dir", AE.tempDir("fetch2"), "--mirror", "http://127.0.0.1:9/"], timeout: 60)
        XCTAssertNotEqual(offline.status, 0)
        XCTAssertTrue(offline.stderr.contains("http://127.0.0.1:9/train-images-idx3-ubyte.gz"), offline.stderr)
        XCTAssertTrue(offline.stderr.contains("by hand"), offline.stderr)
    }
}
