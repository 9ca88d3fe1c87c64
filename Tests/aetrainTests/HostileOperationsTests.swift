import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Issue 14, part 2: odd operations on a run folder and across ranks. Resume at another epoch
/// geometry, pruning that never deletes another run's checkpoints, the epoch's train_loss across a
/// mid-epoch resume, whole metrics lines, the run-folder lock, rank data compared at start-up,
/// rank 0's writing not counted as a stall, stale temp files. Same contract and helpers as
/// `HostileInputTests` (`AETRAIN_HOSTILE_BIN` runs them against another build).
extension HostileInputTests {
    /// `mpirun` with one app context per rank (`--wdir` and arguments of its own), each rank's exit
    /// code recorded as in `mpirunEveryRank`.
    func mpirunContexts(_ contexts: [(wdir: String, args: [String])], env: [String: String] = [:], timeout: Double = 30) throws -> (AE.Result, [Int32?]) {
        try mpirunRecordingExits(ranks: contexts.count, env: env, timeout: timeout) { wrap in
            contexts.enumerated().flatMap { k, c in
                (k > 0 ? [":"] : []) + ["-np", "1", "--wdir", c.wdir, wrap, HostileInputTests.bin] + c.args
            }
        }
    }

    /// A PID that belonged to a process that has ended (and was reaped).
    func deadPID() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }

    func files(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

    func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    // MARK: defect 1: resume at another epoch geometry

    func geometryArgs(_ mnist: String) -> [String] {
        ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "640", "--test-limit", "64",
         "--epochs", "2", "--seed", "5", "--log-every", "1", "--no-report"]
    }

    /// Train at batch 16 (40 batches per epoch) to step 20, then resume at batch 64 (10 per epoch)
    /// or on 256 images (16 per epoch): the position is re-mapped by the samples consumed, one
    /// line says so, and the run ends where that geometry ends. Before: the epoch ended only on
    /// batch_in_epoch == batches, so the resumed run spun forever (SIGTERM ignored).
    func testResumeAtAnotherBatchSizeOrSmallerSetRemapsThePosition() throws {
        let mnist = try AE.requireMNIST()
        let first = AE.tempDir("geo")
        let t = run(geometryArgs(mnist) + ["--batch-size", "16", "--checkpoint-every", "20", "--max-steps", "20", "--out", first], timeout: 60)
        XCTAssertEqual(t.status, 0, t.stderr)
        let ck = first + "/checkpoints/step-00000020.safetensors"
        XCTAssertEqual(try AE.metadata(ck)["batch_in_epoch"], "20")
        // Batch 64: 320 samples consumed = batch 5 of 10; epoch 1 ends at step 25, epoch 2 at 35.
        let big = AE.tempDir("geo-big")
        let (r, k) = try mpirunEveryRank(2, geometryArgs(mnist) + ["--batch-size", "64", "--resume", ck, "--out", big], timeout: 30)
        XCTAssertFalse(r.timedOut, "resume at batch 64 hung")
        XCTAssertEqual(r.status, 0, r.stderr.suffix(600) + "")
        XCTAssertEqual(k, [0, 0])
        XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("resume: ") },
                       ["resume: the checkpoint is 320 samples into epoch 1 (batch 20 at batch size 16); at batch size 64 epoch 1 continues at batch 5 of 10"], r.stderr)
        let s = try XCTUnwrap(AE.json(big + "/summary.json"))
        XCTAssertEqual(s["steps"] as? Int, 35)
        XCTAssertEqual(s["epochs_completed"] as? Int, 2)
        let evals = AE.jsonLines(big + "/metrics.jsonl").filter { $0["test_mse"] != nil }.map { [$0["epoch"] as? Int, $0["step"] as? Int] }
        XCTAssertEqual(evals, [[1, 25], [2, 35]])
        let steps = AE.jsonLines(big + "/metrics.jsonl").filter { $0["test_mse"] == nil }
        XCTAssertEqual(steps.map { $0["step"] as? Int }, (21...35).map { $0 })
        XCTAssertEqual(steps.map { $0["samples"] as? Int }, Array(repeating: 64, count: 15))
        XCTAssertEqual(run(["info", ck]).status, 0, "the resumed checkpoint must stay loadable")
        // 256 images at batch 16: 320 samples are past the epoch's end; epoch 2 begins (16 steps).
        let small = AE.tempDir("geo-small")
        let (r2, k2) = try mpirunEveryRank(2, geometryArgs(mnist) + ["--batch-size", "16", "--train-limit", "256", "--resume", ck, "--out", small], timeout: 30)
        XCTAssertFalse(r2.timedOut, "resume on a smaller training set hung")
        XCTAssertEqual(r2.status, 0, r2.stderr.suffix(600) + "")
        XCTAssertEqual(k2, [0, 0])
        XCTAssertTrue(r2.stderr.contains("resume: the checkpoint is 320 samples into epoch 1 (batch 20 at batch size 16), past the end of this run's epoch of 256 images; epoch 1 counts as done (no evaluation line) and epoch 2 begins"), r2.stderr)
        let s2 = try XCTUnwrap(AE.json(small + "/summary.json"))
        XCTAssertEqual(s2["steps"] as? Int, 36)
        XCTAssertEqual(s2["epochs_completed"] as? Int, 2)
    }

    // MARK: defect 3 (found by the test helper): the epoch's train_loss after a mid-epoch resume

    func testMidEpochResumeIsBitExactIncludingTheEpochsTrainLoss() throws {
        let mnist = try AE.requireMNIST()
        // The same geometry is not re-mapped: a run preempted mid-epoch (SIGTERM at its first
        // step boundary) and resumed ends bit-exact with a straight run: tensors, position, every
        // metrics line including epoch 1's train_loss (defect 3: it used to average only the
        // steps after the resume), and summary.json's train_loss.
        let straight = AE.tempDir("geo-straight"), split = AE.tempDir("geo-split")
        let a = run(geometryArgs(mnist) + ["--batch-size", "16", "--out", straight], timeout: 60)
        XCTAssertEqual(a.status, 0, a.stderr)
        let pid = try spawn(geometryArgs(mnist) + ["--batch-size", "16", "--out", split], blocked: [SIGTERM], stderrTo: split + ".err")
        kill(pid, SIGTERM)
        XCTAssertEqual(wait(pid).code, ExitCode.preempted, (try? String(contentsOfFile: split + ".err", encoding: .utf8)) ?? "")
        XCTAssertEqual(try AE.metadata(try AE.checkpoint(split))["batch_in_epoch"], "1")
        let b = run(geometryArgs(mnist) + ["--batch-size", "16", "--resume", "auto", "--out", split], timeout: 60)
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertFalse(b.stderr.contains("resume: "), b.stderr)
        try CheckpointE2ETests.assertSameFinalState(split, as: straight, resumedAt: 1)
    }

    /// SIGTERM at the first step boundary of a run whose epoch is one step: the epoch ends first
    /// (evaluation, epoch checkpoint), so the checkpoint is valid and the resume continues. Before:
    /// the checkpoint said batch_in_epoch 1 of 1 and failed its own validation.
    func testPreemptionOnAnEpochsLastStepWritesAValidCheckpoint() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("last-step"), err = out + ".err"
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "64", "--test-limit", "64", "--batch-size", "64",
                    "--epochs", "3", "--log-every", "1", "--no-report", "--out", out]
        let pid = try spawn(args, blocked: [SIGTERM], stderrTo: err)
        kill(pid, SIGTERM)
        let (code, _) = wait(pid)
        let text = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        XCTAssertEqual(code, ExitCode.preempted, text)
        XCTAssertTrue(text.contains("stopped by SIGTERM at step 1"), text)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        let info = run(["info", ck])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertEqual(try AE.metadata(ck)["epoch"], "1")
        XCTAssertEqual(try AE.metadata(ck)["batch_in_epoch"], "0")
        let resumed = run(args + ["--resume", "auto"], timeout: 60)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try XCTUnwrap(AE.json(out + "/summary.json"))["steps"] as? Int, 3)
        let evals = AE.jsonLines(out + "/metrics.jsonl").filter { $0["test_mse"] != nil }.compactMap { $0["epoch"] as? Int }
        XCTAssertEqual(evals, [1, 2, 3])
    }

    // MARK: defect 2: pruning, foreign checkpoints

    func pruneArgs(_ mnist: String, _ out: String) -> [String] {
        ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "640", "--test-limit", "64",
         "--batch-size", "64", "--epochs", "5", "--checkpoint-every", "2", "--keep", "2", "--log-every", "1", "--no-report", "--out", out]
    }

    /// Stray files named like checkpoints of far higher steps sit in OUT/checkpoints. Before, a run
    /// kept them and deleted its own, so summary.json named a deleted file and a requeued
    /// `--resume auto` could never progress. Now the run keeps its own newest --keep (across
    /// requeues: a resumed run is the same run), never touches the others, and each requeue goes on.
    func testPruningKeepsThisRunsNewestAndNeverDeletesOtherFiles() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("prune")
        try FileManager.default.createDirectory(atPath: out + "/checkpoints", withIntermediateDirectories: true)
        let strays = ["step-90000001.safetensors", "step-90000002.safetensors"]
        for (i, s) in strays.enumerated() { try Data("not a checkpoint \(i)".utf8).write(to: URL(fileURLWithPath: out + "/checkpoints/" + s)) }
        // The first job (as the sbatch script runs it: --resume auto, nothing valid yet).
        let (r1, k1) = try mpirunEveryRank(2, pruneArgs(mnist, out) + ["--max-steps", "6", "--resume", "auto"], timeout: 60)
        XCTAssertEqual(r1.status, 0, r1.stderr.suffix(600) + "")
        XCTAssertEqual(k1, [0, 0])
        XCTAssertEqual(files(out + "/checkpoints"), ["step-00000004.safetensors", "step-00000006.safetensors"] + strays)
        let s1 = try XCTUnwrap(AE.json(out + "/summary.json"))
        let c1 = try XCTUnwrap(s1["checkpoint"] as? String)
        XCTAssertEqual((c1 as NSString).lastPathComponent, "step-00000006.safetensors")
        XCTAssertEqual(run(["info", c1]).status, 0, "summary.json must name a loadable checkpoint")
        // Requeued twice: each continues from the run's newest and prunes the run's older ones.
        for (maxSteps, expect) in [(10, ["step-00000008.safetensors", "step-00000010.safetensors"]),
                                   (13, ["step-00000012.safetensors", "step-00000013.safetensors"])] {
            let (r, k) = try mpirunEveryRank(2, pruneArgs(mnist, out) + ["--max-steps", String(maxSteps), "--resume", "auto"], timeout: 60)
            XCTAssertEqual(r.status, 0, r.stderr.suffix(600) + "")
            XCTAssertEqual(k, [0, 0])
            XCTAssertTrue(r.stderr.contains("at step \(maxSteps == 10 ? 6 : 10) "), r.stderr)
            XCTAssertEqual(files(out + "/checkpoints"), expect + strays)
            let s = try XCTUnwrap(AE.json(out + "/summary.json"))
            XCTAssertEqual(s["steps"] as? Int, maxSteps)
            XCTAssertEqual(((s["checkpoint"] as? String).map { ($0 as NSString).lastPathComponent }), expect.last)
            XCTAssertTrue(FileManager.default.fileExists(atPath: try XCTUnwrap(s["checkpoint"] as? String)))
        }
        XCTAssertEqual(try AE.metadata(out + "/checkpoints/step-00000013.safetensors")["previous_checkpoints"], "step-00000012.safetensors")
        for (i, s) in strays.enumerated() { XCTAssertEqual(bytes(out + "/checkpoints/" + s), Data("not a checkpoint \(i)".utf8), s) }
    }

    /// A fresh run (no --resume) into a folder with another run's checkpoints stops at once (exit 2,
    /// every rank, nothing touched); --overwrite moves them aside and starts; a checkpoint the run
    /// would write over a file it did not write is refused (exit 4), the file kept.
    func testAFreshRunIntoAFolderWithCheckpointsIsRefusedUnlessOverwrite() throws {
        let mnist = try AE.requireMNIST()
        let earlier = AE.tempDir("earlier")
        let e = run(pruneArgs(mnist, earlier) + ["--max-steps", "8", "--seed", "1"], timeout: 60)
        XCTAssertEqual(e.status, 0, e.stderr)
        let before = files(earlier + "/checkpoints")
        XCTAssertEqual(before, ["step-00000006.safetensors", "step-00000008.safetensors"])
        let saved = before.map { bytes(earlier + "/checkpoints/" + $0) }
        let (r, k) = try mpirunEveryRank(2, pruneArgs(mnist, earlier) + ["--max-steps", "4"])
        expectFailure(r, ExitCode.usage, ["--out \(earlier)", "step-00000008.safetensors", "--resume auto", "--overwrite"], ranks: k,
                      "fresh run into a folder with checkpoints")
        XCTAssertEqual(files(earlier + "/checkpoints"), before)
        XCTAssertEqual(before.map { bytes(earlier + "/checkpoints/" + $0) }, saved)
        expectFailure(run(pruneArgs(mnist, earlier) + ["--overwrite", "--resume", "auto"]), ExitCode.usage, ["--overwrite", "--resume"],
                      "--overwrite with --resume")
        // --overwrite: moved aside whole, the new run's own checkpoints in checkpoints/.
        let (o, ko) = try mpirunEveryRank(2, pruneArgs(mnist, earlier) + ["--max-steps", "4", "--overwrite"], timeout: 60)
        XCTAssertEqual(o.status, 0, o.stderr.suffix(600) + "")
        XCTAssertEqual(ko, [0, 0])
        let moved = try XCTUnwrap(files(earlier).first { $0.hasPrefix("checkpoints-replaced-") }, o.stderr)
        XCTAssertTrue(o.stderr.contains("note: --overwrite: moved the earlier run's 2 checkpoint(s) to \(earlier)/\(moved)"), o.stderr)
        XCTAssertEqual(files(earlier + "/" + moved), before)
        XCTAssertEqual(before.map { bytes(earlier + "/" + moved + "/" + $0) }, saved)
        XCTAssertEqual(files(earlier + "/checkpoints"), ["step-00000002.safetensors", "step-00000004.safetensors"])
        // Resuming from a file elsewhere into a folder holding another run's step 10: not replaced.
        let other = AE.tempDir("other")
        try FileManager.default.createDirectory(atPath: other + "/checkpoints", withIntermediateDirectories: true)
        let foreign = other + "/checkpoints/step-00000010.safetensors"
        try FileManager.default.copyItem(atPath: earlier + "/" + moved + "/step-00000008.safetensors", toPath: foreign)
        let foreignBytes = bytes(foreign)
        let src = earlier + "/checkpoints/step-00000004.safetensors"
        let (x, kx) = try mpirunEveryRank(2, pruneArgs(mnist, other) + ["--max-steps", "12", "--resume", src])
        expectFailure(x, ExitCode.io, [foreign, "not written by this run"], ranks: kx, "checkpoint over another run's file")
        XCTAssertEqual(bytes(foreign), foreignBytes)
        XCTAssertEqual(files(other + "/checkpoints"), ["step-00000006.safetensors", "step-00000008.safetensors", "step-00000010.safetensors"])
        XCTAssertEqual(run(["info", other + "/checkpoints/step-00000008.safetensors"]).status, 0)
        // A folder left with only an earlier run's best.safetensors: a fresh --keep-best run would
        // write over it, so it is refused the same way, the file untouched.
        let bestOnly = AE.tempDir("best-only")
        try FileManager.default.createDirectory(atPath: bestOnly + "/checkpoints", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: foreign, toPath: bestOnly + "/checkpoints/best.safetensors")
        let b = run(pruneArgs(mnist, bestOnly) + ["--max-steps", "4", "--keep-best"], timeout: 60)
        expectFailure(b, ExitCode.usage, ["--out \(bestOnly)", "best.safetensors", "--overwrite"], "fresh run into a folder with a best checkpoint")
        XCTAssertEqual(files(bestOnly + "/checkpoints"), ["best.safetensors"])
        XCTAssertEqual(bytes(bestOnly + "/checkpoints/best.safetensors"), foreignBytes)
    }

    // MARK: defect 8: metrics lines whole or not at all

    /// A FIFO as metrics.jsonl must not hang a resume, nor be replaced. Here a process holds it
    /// open for writing and never writes (this test): reading it to keep the lines up to the
    /// checkpoint used to wait for an end of file that never came.
    func testAFIFOAsMetricsFileIsRefused() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("metrics-fifo")
        let t = run(merge(small(mnist, out), ["--max-steps", "2"]), timeout: 60)
        XCTAssertEqual(t.status, 0, t.stderr)
        unlink(out + "/metrics.jsonl")
        XCTAssertEqual(mkfifo(out + "/metrics.jsonl", 0o644), 0)
        let holder = open(out + "/metrics.jsonl", O_RDWR | O_NONBLOCK)
        XCTAssertGreaterThanOrEqual(holder, 0)
        defer { close(holder) }
        let (r, k) = try mpirunEveryRank(2, small(mnist, out) + ["--resume", "auto"])
        expectFailure(r, ExitCode.io, [out + "/metrics.jsonl", "FIFO"], ranks: k, "FIFO metrics.jsonl on resume")
        XCTAssertTrue(isFIFO(out + "/metrics.jsonl"))
        XCTAssertEqual(run(["info", try XCTUnwrap(AE.latestCheckpoint(out))]).status, 0)
    }

    /// Writes that stop part-way (a file size limit here: short write, then EFBIG, as a full disk
    /// gives a short write, then ENOSPC; Tests/Cluster/faults.sh has the real full tmpfs): every
    /// line in metrics.jsonl is whole and the warning names the real cause. Before: a torn last
    /// line and a stale "No such file or directory".
    func testMetricsLinesAreWholeWhenWritesStopPartWay() throws {
        let mnist = try AE.requireMNIST()
        let prlimit = try XCTUnwrap(AE.which("prlimit"), "prlimit (util-linux) not found")
        let out = AE.tempDir("metrics-limit")
        let args = merge(small(mnist, out), ["--max-steps", "120", "--epochs", "100", "--on-checkpoint-error", "continue"])
        // SIGXFSZ ignored (inherited through exec), so the limit gives EFBIG instead of a kill.
        let cmd = ([prlimit, "--fsize=3000:3000", HostileInputTests.bin] + args).map { "'\($0)'" }.joined(separator: " ")
        let r = AE.exec(["/bin/sh", "-c", "trap '' XFSZ; exec \(cmd)"], env: ["SWIFT_BACKTRACE": "enable=no"], timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, r.stderr.suffix(600) + "")
        let text = try XCTUnwrap(bytes(out + "/metrics.jsonl"))
        XCTAssertGreaterThan(text.count, 1000)
        XCTAssertLessThanOrEqual(text.count, 3000)
        XCTAssertEqual(text.last, UInt8(ascii: "\n"), "metrics.jsonl ends in a torn line")
        let lines = String(decoding: text, as: UTF8.self).split(separator: "\n")
        XCTAssertTrue(lines.allSatisfy { JSON.parseObject(String($0)) != nil }, "a line is not whole JSON")
        let steps = lines.compactMap { JSON.parseObject(String($0)) }.filter { $0["test_mse"] == nil }.compactMap { $0["step"] as? Int }
        // Every line up to the first that did not fit is there; after it, a shorter line may still
        // fit (lines vary in length): those come whole and in order, the others are left out.
        let prefix = steps.enumerated().prefix { $0.offset + 1 == $0.element }.count
        XCTAssertGreaterThan(prefix, 5, "lines lost before the limit was reached: \(steps)")
        XCTAssertEqual(steps, Array(Set(steps)).sorted(), "lines out of order or repeated")
        XCTAssertLessThan(steps.count, 120)
        let warnings = r.stderr.split(separator: "\n").filter { $0.contains("metrics.jsonl") && $0.contains("warning:") }
        XCTAssertEqual(warnings, ["warning: \(out)/metrics.jsonl: cannot append metrics: File too large; lines that do not fit are left out whole"], r.stderr)
    }

    // MARK: defect 9: the run folder is locked

    func testASecondRunIntoALockedFolderStopsAtOnceNamingTheHolder() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("locked")
        let longArgs = merge(small(mnist, out), ["--epochs", "100000", "--max-steps", "1000000", "--checkpoint-every", "50"])
        let first = try AE.start([HostileInputTests.bin] + longArgs)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        XCTAssertTrue(AE.waitForSteps(out, 5, while: first), "the first run never started")
        var st = stat()
        XCTAssertEqual(stat(out + "/metrics.jsonl", &st), 0)
        let inode = st.st_ino
        let host = RunFolder.hostName()
        for extra in [["--max-steps", "2"], ["--max-steps", "2", "--resume", "auto"]] {
            let (r, k) = try mpirunEveryRank(2, merge(small(mnist, out), extra))
            expectFailure(r, ExitCode.io, ["--out \(out)", "PID \(first.pid) on host \(host)", ".aetrain.lock"], ranks: k,
                          "second train run " + extra.joined(separator: " "))
        }
        let (a, ka) = try mpirunEveryRank(2, ["anomaly", "--normal-class", "1"] + small(mnist, out))
        expectFailure(a, ExitCode.io, ["PID \(first.pid) on host \(host)"], ranks: ka, "anomaly into a locked folder")
        // The first run goes on writing the same metrics.jsonl, and ends normally.
        let seen = AE.stepLosses(out).count
        XCTAssertTrue(AE.waitForSteps(out, seen + 5, while: first))
        XCTAssertEqual(stat(out + "/metrics.jsonl", &st), 0)
        XCTAssertEqual(st.st_ino, inode, "metrics.jsonl was replaced under the first run")
        kill(first.pid, SIGTERM)
        let done = first.wait(timeout: 30)
        XCTAssertEqual(done.status, ExitCode.preempted, done.stderr.suffix(400) + "")
        let stopped = try XCTUnwrap(done.stderr.range(of: #"at step (\d+);"#, options: .regularExpression).map { String(done.stderr[$0].dropFirst(8).dropLast(1)) })
        XCTAssertEqual(AE.stepLosses(out).keys.max().map(String.init), stopped)
        XCTAssertEqual(run(["info", try XCTUnwrap(AE.latestCheckpoint(out))]).status, 0)
        // A lock file left by a dead process is taken over at once...
        let stale = AE.tempDir("stale-lock")
        let dead = try deadPID()
        try "pid \(dead) host \(host)\n".write(toFile: stale + "/.aetrain.lock", atomically: true, encoding: .utf8)
        let ok = run(small(mnist, stale), timeout: 60)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        // ...and a holder's message names the holder (here this test, which holds the lock).
        let fd = open(stale + "/.aetrain.lock", O_RDWR)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0)
        defer { close(fd) }
        let held = run(small(mnist, stale) + ["--resume", "auto"])
        expectFailure(held, ExitCode.io, ["which is not running"], "held lock whose file names a finished run")
        let mine = "pid \(getpid()) host \(host)\n"
        XCTAssertEqual(ftruncate(fd, 0), 0)
        XCTAssertEqual(mine.withCString { pwrite(fd, $0, strlen($0), 0) }, mine.utf8.count)
        expectFailure(run(small(mnist, stale) + ["--resume", "auto"]), ExitCode.io, ["PID \(getpid()) on host \(host)"], "held lock")
    }

    // MARK: defect 10: rank data is compared

    /// Two ranks on two (pretend) nodes read `--data-dir d` relative to their own working
    /// directories (as node-local copies at one path would be): one pixel, or the image count,
    /// differs on rank 1. Before: the replicas trained on different data silently, or deadlocked
    /// at the epoch end. (Ranks of one node read the node's one decoded copy, so only nodes can
    /// differ: AETRAIN_TEST_RANKS_PER_NODE=1 makes each rank a node.)
    func testRankDataThatDiffersStopsEveryRankNamingTheRankAndFile() throws {
        let mnist = try AE.requireMNIST()
        let good = AE.tempDir("rank0"), bad = AE.tempDir("rank1"), counted = AE.tempDir("rank1n")
        for w in [good, bad, counted] {
            try FileManager.default.createDirectory(atPath: w + "/d", withIntermediateDirectories: true)
            for f in DatasetName.fileNames {
                try FileManager.default.createSymbolicLink(atPath: "\(w)/d/\(f).gz", withDestinationPath: "\(mnist)/\(f).gz")
            }
        }
        // Rank 1: one pixel of training image 0 changed (a raw file at the same path, minus .gz).
        unlink(bad + "/d/train-images-idx3-ubyte.gz")
        var images = try IDX.readImages(mnist + "/train-images-idx3-ubyte.gz").3
        images[300] ^= 1
        try Data(Self.be32(0x803) + Self.be32(60000) + Self.be32(28) + Self.be32(28) + images)
            .write(to: URL(fileURLWithPath: bad + "/d/train-images-idx3-ubyte"))
        // Rank 1': the test set has one image fewer.
        for f in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] { unlink("\(counted)/d/\(f).gz") }
        let (_, _, _, testImages) = try IDX.readImages(mnist + "/t10k-images-idx3-ubyte.gz")
        let (_, testLabels) = try IDX.readLabels(mnist + "/t10k-labels-idx1-ubyte.gz")
        try Data(Self.be32(0x803) + Self.be32(9999) + Self.be32(28) + Self.be32(28) + testImages.prefix(9999 * 784))
            .write(to: URL(fileURLWithPath: counted + "/d/t10k-images-idx3-ubyte"))
        try Data(Self.be32(0x801) + Self.be32(9999) + testLabels.prefix(9999)).write(to: URL(fileURLWithPath: counted + "/d/t10k-labels-idx1-ubyte"))
        let args = ["--dataset", "mnist", "--data-dir", "d", "--model", "mlp3", "--train-limit", "256", "--batch-size", "64",
                    "--max-steps", "4", "--no-report", "--out", AE.tempDir("o")]
        let nodes = ["AETRAIN_TEST_RANKS_PER_NODE": "1"]
        let (r, k) = try mpirunContexts([(good, args), (bad, args)], env: nodes)
        expectFailure(r, ExitCode.distributed, ["rank 1 read other data than rank 0", "d/train-images-idx3-ubyte (training images)"],
                      ranks: k, "one pixel differs on rank 1")
        let (r2, k2) = try mpirunContexts([(good, args), (counted, args)], env: nodes)
        expectFailure(r2, ExitCode.distributed, ["rank 1 read other data than rank 0", "d/t10k-images-idx3-ubyte (test images)",
                                                 "d/t10k-labels-idx1-ubyte (test labels)", "9999 test images there, 10000 on rank 0"],
                      ranks: k2, "a test image fewer on rank 1")
        // Identical copies (here the same files through two folders) agree, and the run trains.
        let same = AE.tempDir("rank1same")
        try FileManager.default.createSymbolicLink(atPath: same + "/d", withDestinationPath: good + "/d")
        let (ok, kok) = try mpirunContexts([(good, args), (same, args)], env: nodes, timeout: 60)
        XCTAssertEqual(ok.status, 0, ok.stderr.suffix(600) + "")
        XCTAssertEqual(kok, [0, 0])
    }

    // MARK: defect 12: rank 0's writing is not a stall

    /// Rank 0 stalls for 7 s while writing a checkpoint (stopped with SIGSTOP while its temp file
    /// exists: inside the write, in no collective), as a slow file system would make it, with
    /// --collective-timeout 3 (above the start-up spread of a loaded machine). The other rank waits in the checkpoint's agreement; that wait is not
    /// counted, so the healthy job finishes. Before: rank 1's watchdog aborted it as stalled (exit 6).
    func testRankZerosLongWritesDoNotTripTheCollectiveTimeout() throws {
        let mnist = try AE.requireMNIST()
        try AE.requireMPI()
        let out = AE.tempDir("slow-write")
        // 3.3 M parameters: a 40 MB checkpoint, written long enough to be caught in the act.
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", "custom", "--encoder", "2048", "--latent", "32",
                    "--train-limit", "512", "--test-limit", "64", "--batch-size", "64", "--epochs", "1", "--checkpoint-every", "4",
                    "--log-every", "1", "--collective-timeout", "3", "--no-report", "--out", out]
        let job = try AE.start(["mpirun", "--oversubscribe", "-np", "2", HostileInputTests.bin] + args)
        defer { if job.isRunning { kill(job.pid, SIGKILL) } }
        XCTAssertTrue(AE.waitForSteps(out, 1, while: job), "the run never started")
        let root = try XCTUnwrap(AE.rankPID(out: out, rank: 0), "rank 0 not found")
        // Poll for the temp file of the step-4 checkpoint, then stop rank 0 inside that write.
        let dir = out + "/checkpoints"
        var stopped = false
        let t0 = Date()
        while job.isRunning && Date().timeIntervalSince(t0) < 60 {
            if files(dir).contains(where: { $0.hasPrefix(".step-00000004.safetensors.tmp-") }) {
                kill(root, SIGSTOP)
                stopped = files(dir).contains { $0.hasPrefix(".step-00000004.safetensors.tmp-") }
                if !stopped { kill(root, SIGCONT) }
                break
            }
            usleep(500)
        }
        XCTAssertTrue(stopped, "rank 0 was not caught inside the checkpoint write")
        if stopped {
            sleep(7)
            kill(root, SIGCONT)
        }
        let r = job.wait(timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr.suffix(800) + "")
        XCTAssertFalse(r.stderr.contains("pending for more than"), r.stderr)
        XCTAssertEqual(try XCTUnwrap(AE.json(out + "/summary.json"))["steps"] as? Int, 8)
        XCTAssertEqual(run(["info", dir + "/step-00000004.safetensors"]).status, 0)
    }

    // MARK: defect 13: stale temp files

    func testStaleTempFilesOfDeadWritersAreRemovedAtStart() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("stale-tmp")
        for d in ["checkpoints", "report"] { try FileManager.default.createDirectory(atPath: out + "/" + d, withIntermediateDirectories: true) }
        let dead = try deadPID(), alive = getpid()
        let stale = ["/.summary.json.tmp-\(dead)", "/checkpoints/.step-00000004.safetensors.tmp-\(dead)", "/report/.report.html.tmp-\(dead)",
                     "/.aetrain-write-test-\(dead)"]
        let kept = ["/.metrics.jsonl.tmp-\(alive)", "/checkpoints/.step-00000002.safetensors.tmp-1", "/.notes.tmp-x", "/notes.tmp-\(dead)"]
        for f in stale + kept { try Data("partial".utf8).write(to: URL(fileURLWithPath: out + f)) }
        let (r, k) = try mpirunEveryRank(2, small(mnist, out), timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr.suffix(600) + "")
        XCTAssertEqual(k, [0, 0])
        for f in stale { XCTAssertFalse(FileManager.default.fileExists(atPath: out + f), "\(f) of a dead writer is still there") }
        for f in kept { XCTAssertTrue(FileManager.default.fileExists(atPath: out + f), "\(f) was removed") }
        XCTAssertTrue(r.stderr.contains("note: removed 4 temp file(s) of writers that are no longer running"), r.stderr)
        XCTAssertEqual(run(["info", try XCTUnwrap(AE.latestCheckpoint(out))]).status, 0)
    }
}
