import XCTest
import TestSupport
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

    /// One run's results, for comparing world sizes.
    struct RunResult {
        let name: String
        let losses: [Double]
        let samples: [Double]
        let tensors: [String: [Float]]
    }

    static func result(_ name: String, out: String) throws -> RunResult {
        let lines = AE.stepLines(out)
        return RunResult(name: name, losses: lines.map { $0["loss"] ?? .nan }, samples: lines.map { $0["samples"] ?? .nan },
                         tensors: try AE.tensors(AE.checkpoint(out)))
    }

    /// `run` against the reference: the same per-step losses (1e-5 relative) and the same final
    /// checkpoint — parameters *and* Adam moments. The moments carry the gradient's scale
    /// (exp_avg ∝ g, exp_avg_sq ∝ g²), so a rank that divided by its own slice's count instead of
    /// the global batch, or a missing or doubled 1/N, is off by a factor, far outside the
    /// tolerance: 1e-3 relative plus 1e-3 of each tensor's largest value, for the different order
    /// of the float sums. Most entries agree to 1e-5; the slack is for the rare ReLU unit whose
    /// pre-activation on one sample is so close to 0 that the summation order flips it (deep32
    /// at np 2: one weight of 100,352 off by 3e-4 of the tensor's largest value after 6 steps).
    static func assertSameRun(_ run: RunResult, as ref: RunResult, file: StaticString = #filePath, line: UInt = #line) {
        Compare.close("\(run.name): per-step losses", run.losses, ref.losses, rtol: 1e-5, file: file, line: line)
        Compare.close("\(run.name): per-step sample counts", run.samples, ref.samples, file: file, line: line)
        Compare.tensors("\(run.name) vs \(ref.name)", run.tensors, ref.tensors, rtol: 1e-3, atolFraction: 1e-3, file: file, line: line)
    }

    /// N ranks take the steps one rank takes, seen through the gradient's scale: mlp3 with L2
    /// weight decay (with it Adam is no longer invariant to the gradient's scale), a global batch
    /// of 130 split unevenly (np 3: 43/43/44; np 4: 32/33/32/33) and a final batch of 1 sample each
    /// epoch (every rank but the last has an empty slice), over no mpirun, np 1–4, both gradient
    /// exchanges and bucketed all-reduce. Every mpirun run passes --check-sync 1: every rank
    /// compares a bit-exact checksum of its parameters with rank 0's after every step (a
    /// difference stops the run), so with rank 0's checkpoint equal to the one-rank run's, every
    /// rank's parameters are.
    func testSameGlobalBatchAtEveryWorldSize() throws {
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--batch-size", "130", "--train-limit", "521",
                    "--epochs", "2", "--seed", "7", "--log-every", "1", "--test-limit", "200", "--weight-decay", "0.05",
                    "--check-sync", "1", "--no-report"]
        let base = AE.tempDir("equiv")
        let plain = AE.run(args + ["--out", base + "/plain"], timeout: 180)
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let ref = try Self.result("no mpirun", out: base + "/plain")
        XCTAssertEqual(ref.samples, [130, 130, 130, 130, 1, 130, 130, 130, 130, 1])
        let first = ref.losses[0..<4].reduce(0, +), second = ref.losses[5..<9].reduce(0, +)
        XCTAssertLessThan(second, first, "the loss must fall from the first epoch's full batches to the second's")
        for (np, sync, bucket, used) in [(1, "auto", "0", "none"), (2, "auto", "0", "shared"), (3, "auto", "0", "shared"),
                                         (4, "auto", "0", "shared"), (2, "allreduce", "0", "allreduce"),
                                         (3, "allreduce", "0", "allreduce"), (4, "allreduce", "0", "allreduce"),
                                         (2, "auto", "0.05", "allreduce"), (3, "allreduce", "0.05", "allreduce"),
                                         (4, "auto", "0.05", "allreduce")] {
            let name = "np \(np) \(used) bucket \(bucket) MB"
            let out = base + "/np\(np)-\(sync)-bucket\(bucket)"
            let r = try AE.mpirun(np, args + ["--out", out, "--grad-sync", sync, "--bucket-size", bucket], timeout: 240)
            XCTAssertEqual(r.status, 0, name + ": " + r.stderr)
            let summary = try XCTUnwrap(AE.json(out + "/summary.json"), name)
            XCTAssertEqual(summary["world_size"] as? Int, np, name)
            XCTAssertEqual(summary["grad_sync"] as? String, used, name)
            let run = try Self.result(name, out: out)
            Self.assertSameRun(run, as: ref)
            // No mpirun and np 1 run the same code on the same data: identical to the bit.
            if np == 1 {
                XCTAssertEqual(run.losses, ref.losses)
                for (k, v) in ref.tensors { Compare.identical("np 1 vs no mpirun: \(k)", try XCTUnwrap(run.tensors[k]), v) }
            }
        }
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
        try AE.requireMPI()
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
        try AE.requireMPI()
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

/// The model zoo's N-rank = 1-rank equivalence, through the release binary users run: conv,
/// lstm, sparse-kl (global-batch ρ̂), vae (ε keyed by sample) and denoising (noise keyed by
/// sample), 6 steps with L2 weight decay and a global batch of 66 (np 4: 16/17/16/17), at np 2 with
/// the default exchange and np 4 with the all-reduce (both with --check-sync 1), against no mpirun:
/// per-step losses, parameters and Adam moments (see MPITests.assertSameRun).
final class ZooMPITests: XCTestCase {
    func testZooModelsMatchOneRank() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        for (model, extra) in [("conv", [String]()), ("sparse-kl", []), ("vae", []), ("denoising", ["--noise", "salt-pepper:0.2"]),
                               ("lstm", [])] {
            let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", model, "--batch-size", "66", "--max-steps", "6",
                        "--seed", "5", "--log-every", "1", "--test-limit", "200", "--weight-decay", "0.05", "--no-report"] + extra
            let base = AE.tempDir("zoo-\(model)")
            let one = AE.exec([release] + args + ["--out", base + "/one"], timeout: 300)
            XCTAssertEqual(one.status, 0, one.stderr)
            let ref = try MPITests.result("\(model) no mpirun", out: base + "/one")
            XCTAssertEqual(ref.losses.count, 6, model)
            for (np, sync) in [(2, "auto"), (4, "allreduce")] {
                let out = base + "/np\(np)"
                let r = try AE.mpirun(np, args + ["--out", out, "--grad-sync", sync, "--check-sync", "1"], timeout: 300, binary: release)
                XCTAssertEqual(r.status, 0, "\(model) np \(np): " + r.stderr)
                MPITests.assertSameRun(try MPITests.result("\(model) np \(np) \(sync)", out: out), as: ref)
                if model == "vae" {
                    let line = AE.jsonLines(out + "/metrics.jsonl").first { $0["kl"] != nil }
                    XCTAssertNotNil(line?["recon"], "VAE logs reconstruction and KL separately")
                }
            }
        }
    }
}
