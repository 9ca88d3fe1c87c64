import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Beyond one node, on one machine: `AETRAIN_TEST_RANKS_PER_NODE=K` splits the ranks into pretend
/// nodes of K consecutive ranks (np 4 with K = 2: 2 nodes × 2 ranks; K = 3: 3 + 1), each with its
/// own shared windows, and the hierarchical exchange all-reduces each slice across them.
final class HierarchicalExchangeTests: XCTestCase {
    /// mlp3 with L2 weight decay, a global batch of 130 split unevenly (np 4: 32/33/32/33) and a
    /// last batch of 1 each epoch (three ranks with empty slices), 3 epochs = 15 steps.
    static func args(_ mnist: String) -> [String] {
        ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--batch-size", "130", "--train-limit", "521",
         "--epochs", "3", "--seed", "7", "--log-every", "1", "--test-limit", "200", "--weight-decay", "0.05", "--no-report"]
    }

    static func lrs(_ out: String) -> [Double] { AE.stepLines(out).map { $0["lr"] ?? .nan } }

    /// The hierarchical exchange takes the steps of one rank: at np 4 as 2 × 2 and as 3 + 1 pretend
    /// nodes (the 3-rank node's slices line up with the lone rank, which owns all three), with a
    /// constant rate and with `--lr-schedule cosine --warmup-steps 10`: per-step losses, the final
    /// parameters and Adam moments (MPITests.assertSameRun's tolerances), and `--check-sync 1`
    /// compares every rank with rank 0 after every step, so every rank's parameters are the same.
    func testHierarchicalTakesTheStepsOfOneRank() throws {
        let mnist = try AE.requireMNIST()
        for schedule in [[String](), ["--lr-schedule", "cosine", "--warmup-steps", "10"]] {
            let base = AE.tempDir("hier")
            let plain = AE.run(Self.args(mnist) + schedule + ["--out", base + "/one"], timeout: 180)
            XCTAssertEqual(plain.status, 0, plain.stderr)
            let ref = try MPITests.result("one rank \(schedule)", out: base + "/one")
            XCTAssertEqual(ref.samples, [130, 130, 130, 130, 1, 130, 130, 130, 130, 1, 130, 130, 130, 130, 1])
            let lrs = Self.lrs(base + "/one")
            if schedule.isEmpty {
                XCTAssertEqual(lrs, [Double](repeating: 1e-3, count: 15))
            } else {
                XCTAssertEqual(Array(lrs.prefix(3)), [1e-4, 2e-4, 3e-4], "warm-up: step t takes lr·(t+1)/10")
                XCTAssertEqual(lrs[9], 1e-3)
                XCTAssertLessThan(lrs[14], lrs[10], "cosine after the warm-up")
            }
            for (perNode, shape) in [("2", "2×2"), ("3", "3+1")] {
                let name = "np 4 as \(shape) pretend nodes \(schedule)"
                let out = base + "/np4-\(perNode)"
                let r = try AE.mpirun(4, Self.args(mnist) + schedule + ["--check-sync", "1", "--out", out],
                                      env: ["AETRAIN_TEST_RANKS_PER_NODE": perNode], timeout: 300)
                XCTAssertFalse(r.timedOut, name)
                XCTAssertEqual(r.status, 0, name + ": " + r.stderr)
                let s = try XCTUnwrap(AE.json(out + "/summary.json"), name)
                XCTAssertEqual(s["grad_sync"] as? String, "hierarchical", name)
                XCTAssertEqual(s["nodes"] as? Int, 2, name)
                XCTAssertEqual(s["data_copies"] as? Int, 2, name + ": one data copy per node")
                MPITests.assertSameRun(try MPITests.result(name, out: out), as: ref)
                XCTAssertEqual(Self.lrs(out), lrs, name + ": the same rate at every step")
                // The test split, read from the node's window by every rank, scores the same.
                let refMSE = try XCTUnwrap(AE.json(base + "/one/summary.json")?["test_mse"] as? Double)
                Compare.close(name + ": test MSE", try XCTUnwrap(s["test_mse"] as? Double, name), refMSE, rtol: 1e-4)
            }
        }
    }

    /// `auto` picks by the nodes: shared on one node, hierarchical across nodes when a node has
    /// several ranks, the all-reduce when every node has one rank or with --bucket-size; an
    /// explicit mode is used as asked (hierarchical on one node too); shared across nodes is a
    /// usage error on every rank.
    func testAutoPicksTheExchangeFromTheNodes() throws {
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "512", "--test-limit", "100", "--max-steps", "2",
                    "--epochs", "1", "--no-report"]
        for (np, perNode, extra, expected) in [(4, "1", [String](), "allreduce"), (4, "4", [], "shared"), (4, "2", [], "hierarchical"),
                                               (4, "2", ["--bucket-size", "0.05"], "allreduce"), (4, "2", ["--grad-sync", "allreduce"], "allreduce"),
                                               (2, "2", ["--grad-sync", "hierarchical"], "hierarchical"), (3, "1", ["--grad-sync", "hierarchical"], "hierarchical")] {
            let name = "np \(np), \(perNode) per node, \(extra)"
            let out = AE.tempDir("auto")
            let r = try AE.mpirun(np, args + extra + ["--out", out], env: ["AETRAIN_TEST_RANKS_PER_NODE": perNode], timeout: 120)
            XCTAssertFalse(r.timedOut, name)
            XCTAssertEqual(r.status, 0, name + ": " + r.stderr)
            XCTAssertEqual(AE.json(out + "/summary.json")?["grad_sync"] as? String, expected, name)
            XCTAssertEqual(AE.json(out + "/summary.json")?["nodes"] as? Int, np / Int(perNode)!, name)
        }
        let shared = try AE.mpirun(4, args + ["--grad-sync", "shared", "--out", AE.tempDir("auto")], env: ["AETRAIN_TEST_RANKS_PER_NODE": "2"], timeout: 60)
        XCTAssertFalse(shared.timedOut)
        XCTAssertEqual(shared.status, ExitCode.usage, shared.stderr)
        XCTAssertTrue(shared.stderr.contains("rank 3: error: --grad-sync shared: the 4 ranks are not all on one node (2 pretend nodes × 2 ranks; use auto, hierarchical or allreduce)"), shared.stderr)
        let bucket = try AE.mpirun(2, args + ["--grad-sync", "hierarchical", "--bucket-size", "1", "--out", AE.tempDir("auto")], timeout: 60)
        XCTAssertEqual(bucket.status, ExitCode.usage, bucket.stderr)
        XCTAssertTrue(bucket.stderr.contains("rank 1: error: --bucket-size 1.0: overlapped all-reduce needs --grad-sync allreduce or auto, not hierarchical"), bucket.stderr)
    }

    /// An Inf/NaN in one rank's gradient on the second of 2 × 2 pretend nodes (rank 3, step 3): its
    /// flag crosses the nodes with the step's totals, so with --on-nan stop every rank exits 5
    /// naming step 3, and with skip every rank skips it and the run ends with finite parameters.
    func testNonFiniteGradientOnAnotherNode() throws {
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "1024", "--test-limit", "100", "--max-steps", "6",
                    "--log-every", "1", "--checkpoint-every", "6", "--no-report"]
        let env = ["AETRAIN_TEST_NAN_GRAD": "3:3", "AETRAIN_TEST_RANKS_PER_NODE": "2"]
        let stop = try AE.mpirun(4, args + ["--out", AE.tempDir("hier-nan")], env: env, timeout: 90)
        XCTAssertFalse(stop.timedOut)
        XCTAssertEqual(stop.status, ExitCode.nonFinite, stop.stderr)
        for prefix in ["", "rank 1: ", "rank 2: ", "rank 3: "] {
            XCTAssertTrue(stop.stderr.contains(prefix + "error: non-finite loss or gradient at step 3"), prefix + stop.stderr)
        }
        let out = AE.tempDir("hier-nanskip")
        let skip = try AE.mpirun(4, args + ["--out", out, "--on-nan", "skip"], env: env, timeout: 90)
        XCTAssertFalse(skip.timedOut)
        XCTAssertEqual(skip.status, 0, skip.stderr)
        XCTAssertTrue(skip.stderr.contains("step 3; step skipped"), skip.stderr)
        XCTAssertEqual(AE.json(out + "/summary.json")?["grad_sync"] as? String, "hierarchical")
        XCTAssertEqual(try AE.metadata(AE.checkpoint(out))["adam_step"], "5", "one of the 6 steps skipped")
        let params = try AE.parameters(AE.checkpoint(out))
        XCTAssertTrue(params.values.allSatisfy { $0.allSatisfy(\.isFinite) })
    }

    /// No usable shared-memory directory across 2 × 2 pretend nodes: auto warns and trains with the
    /// all-reduce, each rank with its own data copy; --grad-sync hierarchical stops every rank with
    /// one line (exit 6). Neither hangs.
    func testHierarchicalWithoutSharedMemory() throws {
        let mnist = try AE.requireMNIST()
        try AE.requireMPI()
        for sync in ["auto", "hierarchical"] {
            let out = AE.tempDir("hier-noshm")
            let r = AE.exec(["mpirun", "--oversubscribe", "-np", "4", "--mca", "osc_sm_backing_directory", "/nonexistent-aetrain",
                             AE.binary, "--dataset", "mnist", "--data-dir", mnist, "--train-limit", "512", "--test-limit", "100",
                             "--max-steps", "3", "--grad-sync", sync, "--no-report", "--out", out],
                            env: ["AETRAIN_TEST_RANKS_PER_NODE": "2"], timeout: 90)
            XCTAssertFalse(r.timedOut, sync)
            XCTAssertTrue(r.stderr.contains("warning: shared-memory directory /nonexistent-aetrain is not writable: No such file or directory; each of this node's 2 ranks decodes its own copy of the data"), r.stderr)
            XCTAssertTrue(r.stderr.contains("rank 2: warning: shared-memory directory /nonexistent-aetrain is not writable"), "the other node's leader warns too: " + r.stderr)
            if sync == "auto" {
                XCTAssertEqual(r.status, 0, r.stderr)
                XCTAssertTrue(r.stderr.contains("; using --grad-sync allreduce (pass --grad-sync hierarchical to stop instead)"), r.stderr)
                let s = AE.json(out + "/summary.json")
                XCTAssertEqual(s?["grad_sync"] as? String, "allreduce")
                XCTAssertEqual(s?["data_copies"] as? Int, 4)
            } else {
                XCTAssertEqual(r.status, ExitCode.distributed, r.stderr)
                XCTAssertTrue(r.stderr.contains("error: --grad-sync hierarchical: shared-memory directory /nonexistent-aetrain is not writable"), r.stderr)
                XCTAssertTrue(r.stderr.contains("rank 3: error: --grad-sync hierarchical:"), r.stderr)
            }
        }
    }
}

/// One copy of the decoded data per node: `aetrain selftest-data` loads the splits as training
/// does (the node's local rank 0 decodes into the node's shared window, the others map it), then
/// every rank decodes them again on its own and compares every pixel and label, and says whether
/// its copy was the node's.
final class NodeSharedDataTests: XCTestCase {
    func testTheNodeCopyHoldsWhatAPrivateDecodeGives() throws {
        let mnist = try AE.requireMNIST()
        try AE.requireMPI()
        // One node of 3 ranks (the whole MNIST); 3 + 1 pretend nodes (the lone rank keeps its own).
        for (np, perNode, limit, shared) in [(3, nil as String?, [String](), 3), (4, "3", ["--train-limit", "1000", "--test-limit", "300"], 3)] {
            let r = try AE.mpirun(np, ["selftest-data", "--data-dir", mnist] + limit, env: perNode.map { ["AETRAIN_TEST_RANKS_PER_NODE": $0] } ?? [:],
                                  timeout: 120)
            XCTAssertFalse(r.timedOut)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains("data selftest ok size \(np) shared \(shared)"), r.stdout + r.stderr)
        }
        // Without room for the window: a warning, every rank its own copy, the same bytes, no hang.
        let r = AE.exec(["mpirun", "--oversubscribe", "-np", "2", "--mca", "osc_sm_backing_directory", "/nonexistent-aetrain",
                         AE.binary, "selftest-data", "--data-dir", mnist, "--train-limit", "1000"], timeout: 90)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning: shared-memory directory /nonexistent-aetrain is not writable: No such file or directory; each of this node's 2 ranks decodes its own copy of the data"), r.stderr)
        XCTAssertTrue(r.stdout.contains("data selftest ok size 2 shared 0"), r.stdout + r.stderr)
    }

    /// A training run says how many copies there are: one per node, and rank 0 and 1 of a
    /// one-node run read the same window (their PSS is reported).
    func testTrainingRunsKeepOneCopyPerNode() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("datacopies")
        let r = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--max-steps", "2", "--test-limit", "100", "--no-report",
                                  "--out", out], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try XCTUnwrap(AE.json(out + "/summary.json"))
        XCTAssertEqual(s["data_copies"] as? Int, 1)
        XCTAssertEqual((s["pss_mb_per_rank"] as? [Double])?.count, 2)
        let one = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--max-steps", "2", "--test-limit", "100", "--no-report",
                          "--out", out + "/one"])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(AE.json(out + "/one/summary.json")?["data_copies"] as? Int, 1)
        XCTAssertNil(AE.json(out + "/one/summary.json")?["nodes"], "one rank: no nodes key")
    }
}

/// The learning-rate flags in real runs: they reach Adam, and resumes continue the schedule.
final class LRScheduleRunTests: XCTestCase {
    /// From one checkpoint (step 2 of a small custom MLP at batch 256), one more step under each
    /// schedule flag gives PyTorch's Adam update with the rate the schedule gives step index 2
    /// (OptimizerFlagsTests' method), and the metrics line of that step reports that rate.
    func testScheduleFlagsReachAdam() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        let common = ["--dataset", "mnist", "--data-dir", mnist, "--encoder", "32", "--latent", "8", "--train-limit", "2048", "--test-limit", "100",
                      "--batch-size", "256", "--seed", "3", "--epochs", "1", "--log-every", "1", "--no-report"]
        func train(_ args: [String], _ out: String) throws {
            let r = AE.exec([release] + common + args + ["--out", out])
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
        }
        let base = AE.tempDir("schedflags")
        try train(["--max-steps", "2"], base + "/start")
        let start = try AE.checkpoint(base + "/start")
        let s0 = try OptimizerFlagsTests.state(start)
        try train(["--resume", start, "--max-steps", "3", "--beta1", "0"], base + "/grad")
        let g = try OptimizerFlagsTests.state(AE.checkpoint(base + "/grad")).m
        // Step index 2 of a run of T = 3 steps (--max-steps 3); --scale-lr at batch 256 doubles --lr.
        let cases: [(String, [String], Double)] = [
            ("step:1:0.5", ["--lr-schedule", "step:1:0.5"], 1e-3 * 0.25),
            ("warm-up 5", ["--warmup-steps", "5"], 1e-3 * 3 / 5),
            ("scale-lr", ["--scale-lr"], 2e-3),
            ("cosine, warm-up 1", ["--lr-schedule", "cosine", "--warmup-steps", "1"], 1e-3 * (1 + cos(Double.pi / 2)) / 2),
            ("step:1:0.1, warm-up 1, scale-lr", ["--lr-schedule", "step:1:0.1", "--warmup-steps", "1", "--scale-lr"], 2e-3 * 0.1),
        ]
        for (name, flags, lr) in cases {
            let out = base + "/" + name.replacingOccurrences(of: " ", with: "_")
            try train(["--resume", start, "--max-steps", "3"] + flags, out)
            let line = AE.jsonLines(out + "/metrics.jsonl").first { ($0["step"] as? Int) == 3 && $0["loss"] != nil }
            Compare.close("\(name): lr of step 3's line", try XCTUnwrap(line?["lr"] as? Double, name), lr, rtol: 1e-15)
            let s1 = try OptimizerFlagsTests.state(AE.checkpoint(out))
            var h = OptimizerFlagsTests.Hyper()
            h.lr = lr
            let ref = (0..<s0.p.count).map { i in
                OptimizerFlagsTests.torchStep(p: Double(s0.p[i]), m: Double(s0.m[i]), v: Double(s0.v[i]), g: Double(g[i]), t: 3, h)
            }
            Compare.elementwise("\(name): parameters", s1.p.map(Double.init), ref.map(\.p), tolerance: { i, _, e in
                1e-4 * abs(e - Double(s0.p[i])) + 2 * Double(Float(e).ulp)
            })
        }
    }

    /// Resumed mid-epoch from a checkpoint of a run with a cosine schedule, warm-up and the scaling
    /// rule (one rank), the run ends bit-identical to the uninterrupted one: parameters, moments,
    /// and the metrics lines after the checkpoint (rate included).
    func testResumeMidEpochKeepsTheScheduleBitExact() throws {
        let mnist = try AE.requireMNIST()
        let args = HierarchicalExchangeTests.args(mnist) + ["--lr-schedule", "cosine", "--warmup-steps", "4", "--scale-lr",
                                                           "--checkpoint-every", "3", "--keep", "20"]
        let base = AE.tempDir("schedresume")
        let full = AE.run(args + ["--out", base + "/full"], timeout: 180)
        XCTAssertEqual(full.status, 0, full.stderr)
        let mid = base + "/full/checkpoints/" + Checkpoint.fileName(step: 6)
        XCTAssertEqual(try AE.metadata(mid)["batch_in_epoch"], "1", "step 6 is inside the second epoch")
        let resumed = AE.run(args + ["--resume", mid, "--out", base + "/resumed"], timeout: 180)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try AE.tensors(AE.checkpoint(base + "/full")), b = try AE.tensors(AE.checkpoint(base + "/resumed"))
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        for (k, v) in a { Compare.identical("resumed vs uninterrupted: \(k)", try XCTUnwrap(b[k]), v) }
        let later = AE.stepLines(base + "/full").filter { ($0["step"] ?? 0) > 6 }
        XCTAssertEqual(later.count, 9)
        XCTAssertEqual(AE.stepLines(base + "/resumed"), later)
    }

    /// One run continued across the three exchanges at np 4: hierarchical (2 × 2 pretend nodes) to
    /// step 4, all-reduce to step 8, shared (one node) to the end, each resuming the previous
    /// one's mid-epoch checkpoint. It ends where the uninterrupted hierarchical run and the one-rank
    /// run end within the equivalence tolerance (MPITests.assertSameRun): the exchanges sum in
    /// different orders, so it is not bit-exact. Resumed with the same exchange and layout it is
    /// bit-exact.
    func testResumeAcrossExchangesContinuesTheRun() throws {
        let mnist = try AE.requireMNIST()
        let args = HierarchicalExchangeTests.args(mnist) + ["--lr-schedule", "cosine", "--warmup-steps", "10", "--check-sync", "1",
                                                           "--checkpoint-every", "4", "--keep", "20"]
        let base = AE.tempDir("resume-exchanges")
        func run(_ out: String, _ extra: [String], perNode: String) throws {
            let r = try AE.mpirun(4, args + extra + ["--out", base + "/" + out], env: ["AETRAIN_TEST_RANKS_PER_NODE": perNode], timeout: 300)
            XCTAssertFalse(r.timedOut, out)
            XCTAssertEqual(r.status, 0, out + ": " + r.stderr)
        }
        func checkpoint(_ out: String, _ step: Int) -> String { base + "/\(out)/checkpoints/" + Checkpoint.fileName(step: step) }
        let one = AE.run(HierarchicalExchangeTests.args(mnist) + ["--lr-schedule", "cosine", "--warmup-steps", "10", "--out", base + "/one"], timeout: 180)
        XCTAssertEqual(one.status, 0, one.stderr)
        try run("hier", [], perNode: "2")
        try run("allreduce", ["--resume", checkpoint("hier", 4), "--grad-sync", "allreduce"], perNode: "2")
        try run("shared", ["--resume", checkpoint("allreduce", 8)], perNode: "4")
        for (out, sync) in [("hier", "hierarchical"), ("allreduce", "allreduce"), ("shared", "shared")] {
            XCTAssertEqual(AE.json(base + "/\(out)/summary.json")?["grad_sync"] as? String, sync)
        }
        XCTAssertEqual(AE.json(base + "/shared/summary.json")?["resumed_from_step"] as? Int, 8)
        let ref = try MPITests.result("one rank", out: base + "/one")
        let hier = try MPITests.result("hierarchical", out: base + "/hier")
        // The chain's per-step losses: steps 5–8 from the all-reduce leg, 9–15 from the shared one.
        let legs = AE.stepLines(base + "/allreduce").filter { ($0["step"] ?? 0) <= 8 } + AE.stepLines(base + "/shared")
        XCTAssertEqual(legs.map { Int($0["step"] ?? 0) }, Array(5...15))
        let chain = MPITests.RunResult(name: "hierarchical → allreduce → shared",
                                       losses: Array(hier.losses.prefix(4)) + legs.map { $0["loss"] ?? .nan },
                                       samples: Array(hier.samples.prefix(4)) + legs.map { $0["samples"] ?? .nan },
                                       tensors: try AE.tensors(AE.checkpoint(base + "/shared")))
        MPITests.assertSameRun(chain, as: ref)
        MPITests.assertSameRun(chain, as: hier)
        XCTAssertEqual(legs.map { $0["lr"] ?? .nan }, AE.stepLines(base + "/hier").filter { ($0["step"] ?? 0) > 4 }.map { $0["lr"] ?? .nan })
        // The same exchange on the same layout: bit-exact.
        try run("hier-again", ["--resume", checkpoint("hier", 4)], perNode: "2")
        let again = try AE.tensors(AE.checkpoint(base + "/hier-again"))
        for (k, v) in hier.tensors { Compare.identical("hierarchical resumed as hierarchical: \(k)", try XCTUnwrap(again[k]), v) }
    }
}
