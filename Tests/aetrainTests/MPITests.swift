import XCTest
@testable import AutoencoderCore

/// Data-parallel correctness: N ranks must take the steps one rank takes.
final class MPITests: XCTestCase {
    func testCollectivesAtTwoAndFourRanks() throws {
        for np in [2, 4] {
            let r = try AE.mpirun(np, ["selftest-comm"], timeout: 60)
            XCTAssertFalse(r.timedOut)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains("comm selftest ok size \(np)"), r.stdout + r.stderr)
        }
    }

    func testSameGlobalBatchAtEveryWorldSize() throws {
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--batch-size", "128", "--max-steps", "30",
                    "--epochs", "1", "--seed", "7", "--log-every", "1", "--test-limit", "500", "--checkpoint-every", "30",
                    "--no-report"]
        var runs: [(String, [Int: Double], [String: [Float]])] = []
        let base = AE.tempDir("equiv")
        let plain = AE.run(args + ["--out", base + "/plain"], timeout: 180)
        XCTAssertEqual(plain.status, 0, plain.stderr)
        runs.append(("no mpirun", AE.stepLosses(base + "/plain"), try AE.parameters(AE.latestCheckpoint(base + "/plain")!)))
        // Both gradient exchanges: shared (the default on one node) and the MPI all-reduce, plain
        // and overlapped in buckets.
        for (np, sync, bucket, used) in [(1, "auto", "0", "none"), (2, "auto", "0", "shared"), (4, "auto", "0", "shared"),
                                         (2, "allreduce", "0", "allreduce"), (4, "allreduce", "0", "allreduce"),
                                         (2, "auto", "0.05", "allreduce"), (4, "auto", "0.05", "allreduce")] {
            let out = base + "/np\(np)-\(sync)-bucket\(bucket)"
            let r = try AE.mpirun(np, args + ["--out", out, "--grad-sync", sync, "--bucket-size", bucket], timeout: 240)
            XCTAssertEqual(r.status, 0, r.stderr)
            let summary = try XCTUnwrap(AE.json(out + "/summary.json"))
            XCTAssertEqual(summary["world_size"] as? Int, np)
            XCTAssertEqual(summary["grad_sync"] as? String, used, "np \(np) --grad-sync \(sync) --bucket-size \(bucket)")
            runs.append(("np \(np) \(used) bucket \(bucket) MB", AE.stepLosses(out), try AE.parameters(XCTUnwrap(AE.latestCheckpoint(out)))))
        }
        let (_, refLoss, refParams) = runs[0]
        XCTAssertEqual(refLoss.count, 30)
        XCTAssertLessThan(refLoss[30]!, refLoss[1]!, "loss must fall")
        for (name, losses, params) in runs.dropFirst() {
            XCTAssertEqual(losses.count, 30, name)
            for s in 1...30 {
                let a = refLoss[s]!, b = try XCTUnwrap(losses[s], "\(name) step \(s)")
                XCTAssertLessThanOrEqual(abs(a - b) / abs(a), 1e-5, "\(name) step \(s): \(a) vs \(b)")
            }
            var worst: Float = 0
            for (k, v) in refParams {
                let w = try XCTUnwrap(params[k], name + " " + k)
                for i in 0..<v.count { worst = max(worst, abs(v[i] - w[i])) }
            }
            XCTAssertLessThanOrEqual(worst, 1e-5, "\(name): max parameter difference \(worst)")
        }
        // No mpirun and np 1 run the same code on the same data: identical to the bit.
        XCTAssertEqual(runs[0].1, runs[1].1)
        XCTAssertEqual(runs[0].2, runs[1].2)
    }

    func testLastGlobalBatchLeavesARankEmpty() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("empty")
        // 129 samples, batch 128: the second global batch has 1 sample, so rank 0's slice is empty.
        let r = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "129", "--test-limit", "100",
                                  "--batch-size", "128", "--epochs", "2", "--log-every", "1", "--out", out, "--no-report"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try XCTUnwrap(AE.json(out + "/summary.json"))
        XCTAssertEqual(s["steps"] as? Int, 4)
        XCTAssertEqual(s["train_samples"] as? Int, 258)
        let lines = AE.jsonLines(out + "/metrics.jsonl").filter { $0["test_mse"] == nil }
        XCTAssertEqual(lines.map { $0["samples"] as? Int }, [128, 1, 128, 1])
        XCTAssertTrue(lines.allSatisfy { ($0["loss"] as? Double).map { $0.isFinite } ?? false })
    }

    /// An Inf/NaN in one rank's gradient (injected at step 3 on rank 1): with the default
    /// --on-nan stop every rank exits 5 naming step 3; with skip the step is skipped on every rank
    /// and the run ends with finite parameters. Both gradient exchanges.
    func testNonFiniteGradientOnOneRank() throws {
        let mnist = try AE.requireMNIST()
        for sync in ["shared", "allreduce"] {
            let args = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "1024", "--test-limit", "100", "--max-steps", "6",
                        "--log-every", "1", "--checkpoint-every", "6", "--grad-sync", sync, "--no-report"]
            let stop = try AE.mpirun(2, args + ["--out", AE.tempDir("nangrad")], env: ["AETRAIN_TEST_NAN_GRAD": "1:3"], timeout: 60)
            XCTAssertFalse(stop.timedOut)
            XCTAssertEqual(stop.status, ExitCode.nonFinite, sync + ": " + stop.stderr)
            XCTAssertTrue(stop.stderr.contains("error: non-finite loss or gradient at step 3"), stop.stderr)
            XCTAssertTrue(stop.stderr.contains("rank 1: error: non-finite loss or gradient at step 3"), stop.stderr)
            let out = AE.tempDir("nanskip")
            let skip = try AE.mpirun(2, args + ["--out", out, "--on-nan", "skip"], env: ["AETRAIN_TEST_NAN_GRAD": "1:3"], timeout: 60)
            XCTAssertEqual(skip.status, 0, sync + ": " + skip.stderr)
            XCTAssertTrue(skip.stderr.contains("step 3; step skipped"), skip.stderr)
            let params = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(out)))
            XCTAssertTrue(params.values.allSatisfy { $0.allSatisfy(\.isFinite) }, sync)
        }
    }

    /// No usable shared-memory directory (osc/sm's backing directory made unwritable): auto warns
    /// and trains with the all-reduce; an explicit --grad-sync shared stops every rank with one
    /// line (exit 6). Neither hangs.
    func testSharedMemoryUnavailable() throws {
        let mnist = try AE.requireMNIST()
        guard AE.hasMPI else { throw XCTSkip("no mpirun") }
        for sync in ["auto", "shared"] {
            let out = AE.tempDir("noshm")
            let r = AE.exec(["mpirun", "--oversubscribe", "-np", "2", "--mca", "osc_sm_backing_directory", "/nonexistent-aetrain",
                             AE.binary, "--dataset", "mnist", "--data-dir", mnist, "--train-limit", "512", "--test-limit", "100",
                             "--epochs", "1", "--grad-sync", sync, "--no-report", "--out", out], timeout: 60)
            XCTAssertFalse(r.timedOut, sync)
            if sync == "auto" {
                XCTAssertEqual(r.status, 0, r.stderr)
                XCTAssertTrue(r.stderr.contains("warning: shared-memory directory /nonexistent-aetrain is not writable"), r.stderr)
                XCTAssertEqual(AE.json(out + "/summary.json")?["grad_sync"] as? String, "allreduce")
            } else {
                XCTAssertEqual(r.status, ExitCode.distributed, r.stderr)
                XCTAssertTrue(r.stderr.contains("error: --grad-sync shared: shared-memory directory /nonexistent-aetrain is not writable"), r.stderr)
                XCTAssertTrue(r.stderr.contains("rank 1: error: --grad-sync shared:"), r.stderr)
            }
        }
    }

    func testSharedExchangeRejectsBuckets() throws {
        let mnist = try AE.requireMNIST()
        let r = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--grad-sync", "shared",
                                  "--bucket-size", "1", "--out", AE.tempDir("shared-bucket")], timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, ExitCode.usage, r.stderr)
        XCTAssertTrue(r.stderr.contains("rank 1: error: --bucket-size 1.0: overlapped all-reduce needs --grad-sync allreduce or auto, not shared"), r.stderr)
    }

    func testConfigMismatchStopsEveryRank() throws {
        let mnist = try AE.requireMNIST()
        guard AE.hasMPI else { throw XCTSkip("no mpirun") }
        let out = AE.tempDir("mismatch")
        let common = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--test-limit", "100", "--epochs", "1", "--out", out]
        let r = AE.exec(["mpirun", "--oversubscribe", "-np", "1", AE.binary] + common + ["--lr", "0.001", ":",
                         "-np", "1", AE.binary] + common + ["--lr", "0.002"], timeout: 60)
        XCTAssertFalse(r.timedOut, "hung on a config mismatch")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("configuration differs from rank 0") && r.stderr.contains("adam.lr is 0.002 here, 0.001 on rank 0"), r.stderr)
        XCTAssertTrue(r.stderr.contains("rank 1: error:"), r.stderr)
        XCTAssertLessThan(r.seconds, 30)
    }

    func testNonFiniteFlagsFailCleanlyOnEveryRank() throws {
        let mnist = try AE.requireMNIST()
        for (flag, value) in [("--lr", "nan"), ("--beta", "inf")] {
            let r = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--model", "vae", "--train-limit", "256",
                                      flag, value, "--out", AE.tempDir("nonfinite")], timeout: 60)
            XCTAssertFalse(r.timedOut)
            XCTAssertEqual(r.status, ExitCode.usage, r.stderr)
            XCTAssertTrue(r.stderr.contains("rank 1: error: \(flag) \(value)"), r.stderr)
        }
    }

    func testCheckSyncNamesTheStepOfADrift() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("drift")
        let r = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "1024", "--test-limit", "100",
                                  "--epochs", "1", "--check-sync", "2", "--out", out, "--no-report"],
                              env: ["AETRAIN_TEST_PERTURB": "1:4"], timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, ExitCode.distributed)
        XCTAssertTrue(r.stderr.contains("parameters differ between ranks at step 4"), r.stderr)
        // Without the injected drift, the same run passes its sync checks.
        let ok = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "1024", "--test-limit", "100",
                                   "--epochs", "1", "--check-sync", "2", "--out", out + "/ok", "--no-report"], timeout: 60)
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }
}

/// The model zoo's N-rank = 1-rank equivalence: conv, sparse-kl (global-batch ρ̂) and vae (ε keyed
/// by sample), 10 steps, mpirun -np 2 against no mpirun; plus denoising noise keyed by sample.
final class ZooMPITests: XCTestCase {
    func testZooModelsMatchOneRank() throws {
        let mnist = try AE.requireMNIST()
        for (model, extra) in [("conv", [String]()), ("sparse-kl", []), ("vae", []), ("denoising", ["--noise", "salt-pepper:0.2"]),
                               ("lstm", [])] {
            let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", model, "--batch-size", "64", "--max-steps", "10",
                        "--seed", "5", "--log-every", "1", "--test-limit", "200", "--checkpoint-every", "10", "--no-report"] + extra
            let base = AE.tempDir("zoo-\(model)")
            let one = AE.run(args + ["--out", base + "/one"], timeout: 300)
            XCTAssertEqual(one.status, 0, one.stderr)
            let two = try AE.mpirun(2, args + ["--out", base + "/two"], timeout: 300)
            XCTAssertEqual(two.status, 0, two.stderr)
            let la = AE.stepLosses(base + "/one"), lb = AE.stepLosses(base + "/two")
            XCTAssertEqual(la.count, 10, model)
            for s in 1...10 {
                let a = try XCTUnwrap(la[s]), b = try XCTUnwrap(lb[s])
                XCTAssertLessThanOrEqual(abs(a - b) / abs(a), 1e-5, "\(model) step \(s): \(a) vs \(b)")
            }
            let pa = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/one")))
            let pb = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/two")))
            var worst: Float = 0
            for (k, v) in pa { for (x, y) in zip(v, pb[k]!) { worst = max(worst, abs(x - y)) } }
            XCTAssertLessThanOrEqual(worst, 1e-5, "\(model): parameters differ by \(worst)")
            if model == "vae" {
                let line = AE.jsonLines(base + "/two/metrics.jsonl").first { $0["kl"] != nil }
                XCTAssertNotNil(line?["recon"], "VAE logs reconstruction and KL separately")
            }
        }
    }
}
