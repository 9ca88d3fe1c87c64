import XCTest
import TestSupport
@testable import AutoencoderCore

/// Checkpoints users can trust: bit-exact resume, resume across world sizes, crash-safe writes,
/// validation on load, and the commands that read checkpoints.
final class CheckpointE2ETests: XCTestCase {
    func common(_ mnist: String) -> [String] {
        ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "2000", "--test-limit", "500",
         "--batch-size", "128", "--seed", "3", "--log-every", "1", "--no-report"]
    }

    func testResumeIsBitExactUnderMPI() throws {
        let mnist = try AE.requireMNIST()
        let base = AE.tempDir("resume")
        let straight = try AE.mpirun(2, common(mnist) + ["--epochs", "2", "--out", base + "/straight"])
        XCTAssertEqual(straight.status, 0, straight.stderr)
        let first = try AE.mpirun(2, common(mnist) + ["--epochs", "1", "--out", base + "/split"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let second = try AE.mpirun(2, common(mnist) + ["--epochs", "2", "--resume", "auto", "--out", base + "/split"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains("resuming from"), second.stderr)
        let a = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/straight")))
        let b = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/split")))
        XCTAssertEqual(a.count, 16)
        for (k, v) in a { Compare.identical("\(k) after resume", try XCTUnwrap(b[k]), v) }
        XCTAssertEqual(AE.stepLosses(base + "/straight"), AE.stepLosses(base + "/split"))
        XCTAssertEqual(AE.stepLosses(base + "/split").count, 32)
        let s = try XCTUnwrap(AE.json(base + "/split/summary.json"))
        XCTAssertEqual(s["resumed_from_step"] as? Int, 16)
        XCTAssertEqual(s["steps"] as? Int, 32)
        // A requeued job resumes a finished run: nothing left to train, still a clean exit.
        let again = try AE.mpirun(2, common(mnist) + ["--epochs", "2", "--resume", "auto", "--out", base + "/split"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try XCTUnwrap(AE.json(base + "/split/summary.json"))["steps"] as? Int, 32)
        XCTAssertEqual(AE.stepLosses(base + "/split").count, 32)
    }

    /// The final checkpoint of `out` equals `ref`'s: every tensor (parameters and Adam moments)
    /// to the bit, the position and Adam step, every metrics line (losses, sample counts, test
    /// metrics, the epochs' train_loss; not the throughput) and summary.json's train_loss. The
    /// epoch in which the run resumed mid-epoch has its train_loss over all of its steps: the
    /// checkpoint carries the epoch's running loss sum and count.
    static func assertSameFinalState(_ out: String, as ref: String, resumedAt: Int,
                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let a = try AE.checkpoint(out), b = try AE.checkpoint(ref)
        XCTAssertEqual((a as NSString).lastPathComponent, (b as NSString).lastPathComponent, file: file, line: line)
        let ta = try AE.tensors(a), tb = try AE.tensors(b)
        XCTAssertEqual(Set(ta.keys), Set(tb.keys), file: file, line: line)
        XCTAssertTrue(tb.keys.contains { $0.hasPrefix("optimizer.exp_avg_sq.") }, file: file, line: line)
        for k in tb.keys.sorted() { Compare.identical("\(out): \(k)", try XCTUnwrap(ta[k]), tb[k]!, file: file, line: line) }
        let ma = try AE.metadata(a), mb = try AE.metadata(b)
        for k in ["step", "epoch", "batch_in_epoch", "adam_step", "world_size", "data_sha256"] {
            XCTAssertEqual(ma[k], mb[k], "checkpoint metadata \(k)", file: file, line: line)
        }
        func lines(_ o: String) -> [[String: Double]] {
            AE.jsonLines(o + "/metrics.jsonl").map { l in
                var r: [String: Double] = [:]
                for (k, v) in l where k != "samples_per_second" && k != "elapsed_seconds" {
                    if let d = v as? Double { r[k] = d } else if let i = v as? Int { r[k] = Double(i) }
                }
                return r
            }
        }
        let la = lines(out), lb = lines(ref)
        XCTAssertTrue(la.contains { $0["test_mse"] != nil && ($0["step"] ?? 0) > Double(resumedAt) && $0["train_loss"] != nil },
                      "no epoch line with train_loss after the resume at step \(resumedAt)", file: file, line: line)
        XCTAssertGreaterThan(lb.count, 0, file: file, line: line)
        XCTAssertEqual(la.count, lb.count, "metrics.jsonl lines", file: file, line: line)
        for (i, (x, y)) in zip(la, lb).enumerated() where x != y {
            XCTFail("metrics.jsonl line \(i + 1) differs: \(x) vs \(y)", file: file, line: line)
            break
        }
        let sa = AE.json(out + "/summary.json")?["train_loss"] as? Double, sb = AE.json(ref + "/summary.json")?["train_loss"] as? Double
        XCTAssertNotNil(sb, "summary.json train_loss", file: file, line: line)
        XCTAssertEqual(sa, sb, "summary.json train_loss", file: file, line: line)
    }

    /// 300 steps of the VAE (ε keyed by sample and step) under mpirun -np 2 with the release
    /// binary, 100 steps per epoch.
    func midEpochArgs(_ mnist: String, model: String) -> [String] {
        ["--dataset", "mnist", "--data-dir", mnist, "--model", model, "--train-limit", "6400", "--test-limit", "200",
         "--batch-size", "64", "--epochs", "3", "--seed", "11", "--log-every", "1", "--no-report", "--checkpoint-every", "25"]
    }

    /// Preemption (SIGUSR1 to mpirun, which forwards it to every rank, as `scancel --signal=USR1`
    /// does) mid-epoch writes a checkpoint and exits 75; `--resume auto` then ends with exactly the
    /// bytes of an uninterrupted run: tensors, position and metrics.
    func testPreemptedMidEpochResumeIsBitExact() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        try AE.requireMPI()
        let base = AE.tempDir("preempt")
        let args = midEpochArgs(mnist, model: "vae")
        let straight = try AE.mpirun(2, args + ["--out", base + "/straight"], binary: release)
        XCTAssertEqual(straight.status, 0, straight.stderr)
        let cut = base + "/cut"
        let run = try AE.start(["mpirun", "--oversubscribe", "-np", "2", release] + args + ["--out", cut])
        XCTAssertTrue(AE.waitForSteps(cut, 10, while: run), "the run never reached step 10")
        kill(run.pid, SIGUSR1)
        let stopped = run.wait(timeout: 60)
        XCTAssertEqual(stopped.status, ExitCode.preempted, stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("stopped by SIGUSR1 at step"), stopped.stderr)
        let ck = try AE.checkpoint(cut)
        let meta = try AE.metadata(ck)
        let step = try XCTUnwrap(meta["step"].flatMap { Int($0) }), bie = try XCTUnwrap(meta["batch_in_epoch"].flatMap { Int($0) })
        XCTAssertTrue(step >= 10 && step < 300, "preempted at step \(step)")
        XCTAssertGreaterThan(bie, 0, "the preemption checkpoint (step \(step)) is not mid-epoch")
        let resumed = try AE.mpirun(2, args + ["--resume", "auto", "--out", cut], binary: release)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming from \(ck) at step \(step)"), resumed.stderr)
        try Self.assertSameFinalState(cut, as: base + "/straight", resumedAt: step)
    }

    /// A rank killed with SIGKILL (no chance to write anything): `--resume auto` continues from the
    /// newest --checkpoint-every checkpoint (mid-epoch) and ends with the bytes of an uninterrupted
    /// run. Denoising: the input noise is keyed by step and sample.
    func testKilledRunResumesBitExactFromStepCheckpoint() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        try AE.requireMPI()
        let base = AE.tempDir("kill9")
        let args = midEpochArgs(mnist, model: "denoising")
        let straight = try AE.mpirun(2, args + ["--out", base + "/straight"], binary: release)
        XCTAssertEqual(straight.status, 0, straight.stderr)
        let cut = base + "/cut"
        let run = try AE.start(["mpirun", "--oversubscribe", "-np", "2", release] + args + ["--out", cut])
        XCTAssertTrue(AE.waitForSteps(cut, 55, while: run), "the run never reached step 55")
        let victim = try XCTUnwrap(AE.rankPID(out: cut, rank: 1), "rank 1 not found")
        kill(victim, SIGKILL)
        let killed = run.wait(timeout: 60)
        XCTAssertFalse(killed.timedOut, "mpirun did not end after a rank was killed")
        XCTAssertNotEqual(killed.status, 0)
        let ck = try AE.checkpoint(cut)
        let meta = try AE.metadata(ck)
        let step = try XCTUnwrap(meta["step"].flatMap { Int($0) })
        XCTAssertTrue(step >= 50 && step < 300 && step % 25 == 0, "newest checkpoint at step \(step)")
        XCTAssertGreaterThan(Int(meta["batch_in_epoch"] ?? "") ?? 0, 0, "step \(step) is not mid-epoch")
        let resumed = try AE.mpirun(2, args + ["--resume", "auto", "--out", cut], binary: release)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("at step \(step)"), resumed.stderr)
        try Self.assertSameFinalState(cut, as: base + "/straight", resumedAt: step)
    }

    func testResumeAtAnotherWorldSizeContinuesTheSameRun() throws {
        let mnist = try AE.requireMNIST()
        let base = AE.tempDir("resume-ws")
        let straight = try AE.mpirun(2, common(mnist) + ["--epochs", "2", "--out", base + "/straight"])
        XCTAssertEqual(straight.status, 0, straight.stderr)
        XCTAssertEqual(try AE.mpirun(2, common(mnist) + ["--epochs", "1", "--out", base + "/split"]).status, 0)
        let second = AE.run(common(mnist) + ["--epochs", "2", "--resume", "auto", "--out", base + "/split"])
        XCTAssertEqual(second.status, 0, second.stderr)
        let a = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/straight")))
        let b = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/split")))
        Compare.tensors("np 2 → np 1 resume", b, a, atol: 1e-4)
        let la = AE.stepLosses(base + "/straight"), lb = AE.stepLosses(base + "/split")
        XCTAssertEqual(la.count, 32)
        Compare.close("np 2 → np 1 resume: losses of steps 17–32", (17...32).map { lb[$0] ?? .nan }, (17...32).map { la[$0] ?? .nan },
                      rtol: 1e-4)
    }

    func testCrashDuringCheckpointWriteKeepsThePreviousOne() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("crash")
        XCTAssertEqual(AE.run(common(mnist) + ["--epochs", "1", "--out", out]).status, 0)
        let before = try XCTUnwrap(AE.latestCheckpoint(out))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: before))
        // The next write stops dead after its temp file is written, before the rename.
        let r = AE.run(common(mnist) + ["--epochs", "2", "--resume", "auto", "--out", out],
                       env: ["AETRAIN_TEST_CRASH_AFTER_TEMP": out + "/checkpoints/"])
        XCTAssertEqual(r.status, 99)
        XCTAssertEqual(AE.latestCheckpoint(out), before)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: before)), bytes)
        XCTAssertEqual(AE.run(["info", before]).status, 0)
        // The resumed run picks up from the intact checkpoint and finishes.
        let again = AE.run(common(mnist) + ["--epochs", "2", "--resume", "auto", "--out", out])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stderr.contains("at step 16"), again.stderr)
    }

    func testCorruptAndTruncatedCheckpointsAreRejected() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("corrupt")
        XCTAssertEqual(AE.run(common(mnist) + ["--epochs", "1", "--out", out]).status, 0)
        let good = try XCTUnwrap(AE.latestCheckpoint(out))
        var data = try Data(contentsOf: URL(fileURLWithPath: good))
        let flipped = out + "/flipped.safetensors", cut = out + "/cut.safetensors", cutData = out + "/cut-data.safetensors"
        data[data.count - 100] ^= 0x40
        try data.write(to: URL(fileURLWithPath: flipped))
        try Data(contentsOf: URL(fileURLWithPath: good)).prefix(5000).write(to: URL(fileURLWithPath: cut))
        try Data(contentsOf: URL(fileURLWithPath: good)).dropLast(1000).write(to: URL(fileURLWithPath: cutData))
        for (path, cause) in [(flipped, "checksum"), (cut, "beyond the end of the file"), (cutData, "")] {
            for args in [["info", path], ["eval", "--checkpoint", path, "--data-dir", mnist, "--limit", "100"]] {
                let r = AE.run(args)
                XCTAssertEqual(r.status, ExitCode.badInput, "\(args): \(r.stderr)")
                let lines = r.stderr.split(separator: "\n")
                XCTAssertEqual(lines.count, 1, r.stderr)
                XCTAssertTrue(r.stderr.contains(path) && (cause.isEmpty || r.stderr.contains(cause)), r.stderr)
                XCTAssertTrue(r.stdout.isEmpty)
            }
        }
        // --resume auto skips an invalid newest checkpoint and reports it.
        let newest = out + "/checkpoints/step-99999999.safetensors"
        try data.write(to: URL(fileURLWithPath: newest))
        let r = AE.run(common(mnist) + ["--epochs", "2", "--resume", "auto", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("skipping invalid checkpoint") && r.stderr.contains("step-99999999"), r.stderr)
        XCTAssertTrue(r.stderr.contains("at step 16"), r.stderr)
    }

    func testIncompatibleResumeIsRefused() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("incompat")
        XCTAssertEqual(AE.run(common(mnist) + ["--epochs", "1", "--out", out]).status, 0)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        var args = common(mnist)
        args[args.firstIndex(of: "mlp3")!] = "deep32"
        let r = try AE.mpirun(2, args + ["--epochs", "2", "--resume", ck, "--out", out + "/other"], timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, ExitCode.badInput, r.stderr)
        XCTAssertTrue(r.stderr.contains("checkpoint is for model mlp3"), r.stderr)
        // Changing epochs and learning rate is allowed.
        let ok = AE.run(common(mnist) + ["--epochs", "2", "--lr", "0.0005", "--resume", ck, "--out", out])
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }

    func testInfoEncodeReconstructEval() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("cmds")
        XCTAssertEqual(AE.run(common(mnist) + ["--epochs", "1", "--out", out]).status, 0)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        // info --json: metadata and tensor table.
        let info = AE.run(["info", ck, "--json"])
        XCTAssertEqual(info.status, 0, info.stderr)
        let obj = try XCTUnwrap(JSON.parseObject(info.stdout))
        let meta = try XCTUnwrap(obj["metadata"] as? [String: String])
        for k in ["format_version", "step", "epoch", "world_size", "model", "dataset", "config", "aetrain_version", "data_sha256"] {
            XCTAssertNotNil(meta[k], k)
        }
        XCTAssertEqual(meta["model"], "mlp3")
        XCTAssertEqual((obj["tensors"] as? [[String: Any]])?.count, 48)
        // encode: (N, latent) float32 and labels beside it.
        let codes = out + "/codes.npy"
        let e = AE.run(["encode", "--checkpoint", ck, "--output", codes, "--data-dir", mnist, "--limit", "300"])
        XCTAssertEqual(e.status, 0, e.stderr)
        let npy = try NPY.read(URL(fileURLWithPath: codes))
        XCTAssertEqual(npy.descr, "<f4")
        XCTAssertEqual(npy.shape, [300, 3])
        let labels = try NPY.read(URL(fileURLWithPath: out + "/codes.labels.npy"))
        XCTAssertEqual(labels.shape, [300])
        XCTAssertEqual(labels.payload.first, 7)  // the first MNIST test digit is a 7
        // reconstruct: (N, 28, 28) in [0, 1].
        let rec = out + "/recon.npy"
        XCTAssertEqual(AE.run(["reconstruct", "--checkpoint", ck, "--output", rec, "--data-dir", mnist, "--limit", "50"]).status, 0)
        let rn = try NPY.read(URL(fileURLWithPath: rec))
        XCTAssertEqual(rn.shape, [50, 28, 28])
        let vals = rn.payload.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertTrue(vals.allSatisfy { $0 >= 0 && $0 <= 1 })
        // eval agrees with the run's own final test evaluation, alone and sharded over 2 ranks.
        let summary = try XCTUnwrap(AE.json(out + "/summary.json"))
        for np in [1, 2] {
            let ev = try AE.mpirun(np, ["eval", "--checkpoint", ck, "--data-dir", mnist, "--limit", "500"], timeout: 60)
            XCTAssertEqual(ev.status, 0, ev.stderr)
            let eo = try XCTUnwrap(JSON.parseObject(ev.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
            XCTAssertEqual(eo["mse"] as! Double, summary["test_mse"] as! Double, accuracy: 1e-6)
            XCTAssertEqual(eo["bce"] as! Double, summary["test_bce"] as! Double, accuracy: 1e-6)
        }
    }

    func testStateDictNamesMatchPyTorch() throws {
        // From: encoder = nn.Sequential(nn.Linear(784,128), nn.ReLU(), nn.Linear(128,64), nn.ReLU(),
        //         nn.Linear(64,12), nn.ReLU(), nn.Linear(12,3)); decoder mirrored, ending nn.Sigmoid().
        let expected: [(String, [Int])] = [
            ("encoder.0.weight", [128, 784]), ("encoder.0.bias", [128]), ("encoder.2.weight", [64, 128]), ("encoder.2.bias", [64]),
            ("encoder.4.weight", [12, 64]), ("encoder.4.bias", [12]), ("encoder.6.weight", [3, 12]), ("encoder.6.bias", [3]),
            ("decoder.0.weight", [12, 3]), ("decoder.0.bias", [12]), ("decoder.2.weight", [64, 12]), ("decoder.2.bias", [64]),
            ("decoder.4.weight", [128, 64]), ("decoder.4.bias", [128]), ("decoder.6.weight", [784, 128]), ("decoder.6.bias", [784]),
        ]
        let m = try Autoencoder(spec: ModelSpec.preset("mlp3")!, objective: Objective(), maxBatch: 1)
        XCTAssertEqual(m.tensors.map(\.name), expected.map(\.0))
        XCTAssertEqual(m.tensors.map(\.shape), expected.map(\.1))
        // deep32 (Keras): encoder Linear(784,128) ReLU Linear(128,64) ReLU Linear(64,32) ReLU.
        let d = try Autoencoder(spec: ModelSpec.preset("deep32")!, objective: Objective(), maxBatch: 1)
        XCTAssertEqual(d.tensors.map(\.name), ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
                                               "encoder.4.weight", "encoder.4.bias", "decoder.0.weight", "decoder.0.bias",
                                               "decoder.2.weight", "decoder.2.bias", "decoder.4.weight", "decoder.4.bias"])
        XCTAssertEqual(d.tensors.last!.shape, [784])
    }
}

/// The checkpoint means what PyTorch would mean by it: an independent reader (Python, from the
/// safetensors spec, not the safetensors package) plus numpy with the semantics of the torch
/// modules the state-dict names stand for reproduces `reconstruct` for every kind of layer:
/// nn.Linear (y = x Wᵀ + b) with ReLU (mlp3, deep32), nn.Conv2d(padding=1) + MaxPool2d(2) +
/// Upsample(scale_factor=2) (conv), nn.LSTM(batch_first) over the image rows with the code repeated
/// into the decoder LSTM and a per-row Linear (lstm), and the VAE decoding μ.
final class PyTorchSemanticsTests: XCTestCase {
    static let script = """
    import json, struct, sys, gzip, numpy as np
    kind, ckpt, mnist, out = sys.argv[1:5]
    raw = open(ckpt, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n]); data = raw[8 + n:]
    def t(name):
        h = header[name]; b, e = h['data_offsets']
        assert h['dtype'] == 'F32'
        return np.frombuffer(data[b:e], dtype='<f4').reshape(h['shape']).astype(np.float64)
    with gzip.open(mnist + '/t10k-images-idx3-ubyte.gz') as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[:7840].reshape(10, 784).astype(np.float64) / 255
    relu = lambda v: np.maximum(v, 0)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    def linear(p, h): return h @ t(p + '.weight').T + t(p + '.bias')          # nn.Linear
    def conv(p, h):                                                             # nn.Conv2d(k=3, padding=1)
        w, b = t(p + '.weight'), t(p + '.bias')
        N, C, H, W = h.shape
        hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        y = np.zeros((N, w.shape[0], H, W)) + b[None, :, None, None]
        for ky in range(3):
            for kx in range(3):
                y += np.einsum('oc,nchw->nohw', w[:, :, ky, kx], hp[:, :, ky:ky + H, kx:kx + W])
        return y
    pool = lambda h: h.reshape(h.shape[0], h.shape[1], h.shape[2] // 2, 2, h.shape[3] // 2, 2).max(axis=(3, 5))  # nn.MaxPool2d(2)
    up = lambda h: h.repeat(2, axis=2).repeat(2, axis=3)                         # nn.Upsample(scale_factor=2)
    def lstm(p, steps):                                                          # nn.LSTM(batch_first=True), h0 = c0 = 0
        wih, whh, bih, bhh = t(p + '.weight_ih_l0'), t(p + '.weight_hh_l0'), t(p + '.bias_ih_l0'), t(p + '.bias_hh_l0')
        H = whh.shape[1]
        h = np.zeros((steps[0].shape[0], H)); c = np.zeros_like(h); hs = []
        for xt in steps:
            z = xt @ wih.T + bih + h @ whh.T + bhh
            i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
            c = f * c + i * g; h = o * np.tanh(c); hs.append(h)
        return hs
    if kind in ('mlp3', 'deep32'):
        idx = [0, 2, 4, 6] if kind == 'mlp3' else [0, 2, 4]
        h = x
        for k, i in enumerate(idx):
            h = linear(f'encoder.{i}', h)
            if kind == 'deep32' or k < len(idx) - 1: h = relu(h)              # mlp3's code is linear
        for k, i in enumerate(idx):
            h = linear(f'decoder.{i}', h)
            if k < len(idx) - 1: h = relu(h)
        logits = h
    elif kind == 'conv':
        h = x.reshape(10, 1, 28, 28)
        h = pool(relu(conv('encoder.3', pool(relu(conv('encoder.0', h))))))
        h = conv('decoder.6', up(relu(conv('decoder.3', up(relu(conv('decoder.0', h)))))))
        logits = h.reshape(10, 784)
    elif kind == 'lstm':
        rows = x.reshape(10, 28, 28)
        code = lstm('encoder.0', [rows[:, r, :] for r in range(28)])[-1]
        hs = lstm('decoder.0', [code] * 28)
        logits = np.stack([linear('decoder.0.proj', h) for h in hs], axis=1).reshape(10, 784)
    elif kind == 'vae':
        stats = linear('encoder.2', relu(linear('encoder.0', x)))
        mu = stats[:, :stats.shape[1] // 2]                                     # reconstruct decodes z = μ
        logits = linear('decoder.2', relu(linear('decoder.0', mu)))
    np.save(out, sigmoid(logits).reshape(10, 28, 28))
    """

    func testNumpyForwardWithStateDictMatchesReconstruct() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        guard AE.exec(["python3", "-c", "import numpy"], timeout: 30).status == 0 else {
            throw TestFailure("python3 with numpy not available (Launch/test.sh installs it)")
        }
        for model in ["mlp3", "deep32", "conv", "lstm", "vae"] {
            let out = AE.tempDir("torchsem-\(model)")
            // A few steps, so the parameters are no longer the initial ones.
            let t = AE.exec([release, "--dataset", "mnist", "--data-dir", mnist, "--model", model, "--train-limit", "640",
                             "--test-limit", "100", "--batch-size", "64", "--epochs", "1", "--out", out, "--no-report"])
            XCTAssertEqual(t.status, 0, t.stderr)
            let ck = try AE.checkpoint(out)
            let r = AE.exec([release, "reconstruct", "--checkpoint", ck, "--output", out + "/rec.npy", "--data-dir", mnist, "--limit", "10"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let py = AE.exec(["python3", "-c", Self.script, model, ck, mnist, out + "/ref.npy"], timeout: 120)
            XCTAssertEqual(py.status, 0, model + ": " + py.stderr)
            let ours = try NPY.read(URL(fileURLWithPath: out + "/rec.npy")), ref = try NPY.read(URL(fileURLWithPath: out + "/ref.npy"))
            XCTAssertEqual(ours.descr, "<f4")
            XCTAssertEqual(ref.descr, "<f8")
            XCTAssertEqual(ours.shape, [10, 28, 28])
            XCTAssertEqual(ref.shape, ours.shape)
            let a = ours.payload.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let b = ref.payload.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
            // Float32 against Double: a few 1e-7 relative in the logits.
            Compare.close("\(model): reconstruct vs numpy forward of the checkpoint", a, b, atol: 1e-5)
            XCTAssertGreaterThan(b.max()! - b.min()!, 0.1, "\(model): the reference is (nearly) constant; the comparison would be weak")
        }
    }
}
