import XCTest
import TestSupport
@testable import AutoencoderCore

/// `--precision bf16` end to end: N ranks take the steps one rank takes, resume is bit-exact, the
/// summary says which precision ran, and every primitive of the presets runs oneDNN's optimised
/// kernels (never its reference code). About 40 s on 2 cores (debug build).
final class PrecisionE2ETests: XCTestCase {
    /// Skips nothing: on a CPU without AVX-512, `--precision bf16` must be refused with one line.
    func requireBF16() throws -> Bool {
        if DNNL.bf16Supported { return true }
        let mnist = try AE.requireMNIST()
        let r = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--precision", "bf16", "--max-steps", "1", "--out", AE.tempDir("nobf16")])
        XCTAssertEqual(r.status, ExitCode.usage, r.stderr)
        XCTAssertTrue(r.stderr.contains("error: --precision bf16: oneDNN has no bf16 kernels for this CPU"), r.stderr)
        // The refusal is checked; the bf16 numerics are not: a skip, which Launch/test.sh counts
        // as a failure unless AETRAIN_ALLOW_SKIP=1.
        throw XCTSkip("this CPU has no AVX-512 bf16 (oneDNN runs \(DNNL.isa) code): bf16 runs are refused, their numerics untested")
    }

    /// bf16 at np 2 and np 4 (shared exchange and all-reduce) against no mpirun, 16 steps of
    /// batch 130 over 1000 images (slices 65/65 and 32/33/32/33, the last batch 90, weight decay
    /// on). The tolerance is the f32 one (1e-5): distribution only reorders f32 sums, and a
    /// reordering that flips a bf16 rounding is rare (measured: 1e-6 relative in the losses and
    /// parameters at np 2 and 4), while bf16 and f32 runs differ by ~2e-4 in the loss and ~2e-3
    /// in the parameters — so the check would see a rank using other inputs or other rounding.
    func testBF16NRanksEqualOneRank() throws {
        guard try requireBF16() else { return }
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--batch-size", "130", "--train-limit", "1000",
                    "--epochs", "2", "--seed", "7", "--log-every", "1", "--test-limit", "300", "--weight-decay", "1e-3",
                    "--no-report", "--precision", "bf16"]
        let base = AE.tempDir("bf16-equiv")
        let one = AE.run(args + ["--out", base + "/one"], timeout: 180)
        XCTAssertEqual(one.status, 0, one.stderr)
        let f32 = AE.run(Array(args.dropLast(2)) + ["--out", base + "/f32"], timeout: 180)
        XCTAssertEqual(f32.status, 0, f32.stderr)
        let ref = AE.stepLosses(base + "/one"), refParams = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/one")))
        XCTAssertEqual(ref.count, 16)
        XCTAssertEqual(AE.json(base + "/one/summary.json")?["compute_precision"] as? String, "bf16")
        XCTAssertEqual(AE.json(base + "/f32/summary.json")?["compute_precision"] as? String, "f32")
        // The scale of a real precision difference, which the comparisons below must be far under.
        let fl = AE.stepLosses(base + "/f32")
        let precisionGap = (1...16).map { abs(fl[$0]! - ref[$0]!) / abs(ref[$0]!) }.max()!
        XCTAssertGreaterThan(precisionGap, 1e-5, "bf16 and f32 runs should differ")
        for (np, sync) in [(2, "shared"), (4, "allreduce")] {
            let out = base + "/np\(np)"
            let r = try AE.mpirun(np, args + ["--grad-sync", sync, "--out", out], timeout: 240)
            XCTAssertEqual(r.status, 0, r.stderr)
            let l = AE.stepLosses(out)
            XCTAssertEqual(l.count, 16)
            for s in 1...16 {
                let a = try XCTUnwrap(ref[s]), b = try XCTUnwrap(l[s], "np \(np) step \(s)")
                XCTAssertLessThanOrEqual(abs(a - b) / abs(a), 1e-5, "bf16 np \(np) step \(s): \(a) vs \(b)")
            }
            let p = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(out)))
            Compare.tensors("bf16 np \(np) parameters vs one rank", p, refParams, atol: 1e-5)
        }
    }

    /// The conv preset in bf16 (bf16 blocked and NHWC boundaries, pooling, upsampling, the
    /// lowered 32→1 head) at np 2 equals one rank.
    func testBF16ConvTwoRanksEqualOneRank() throws {
        guard try requireBF16() else { return }
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--model", "conv", "--batch-size", "32", "--max-steps", "6",
                    "--seed", "5", "--log-every", "1", "--test-limit", "64", "--checkpoint-every", "6", "--no-report", "--precision", "bf16"]
        let base = AE.tempDir("bf16-conv")
        let one = AE.run(args + ["--out", base + "/one"], timeout: 300)
        XCTAssertEqual(one.status, 0, one.stderr)
        let two = try AE.mpirun(2, args + ["--out", base + "/two"], timeout: 300)
        XCTAssertEqual(two.status, 0, two.stderr)
        let la = AE.stepLosses(base + "/one"), lb = AE.stepLosses(base + "/two")
        XCTAssertEqual(la.count, 6)
        for s in 1...6 {
            let a = try XCTUnwrap(la[s]), b = try XCTUnwrap(lb[s])
            XCTAssertLessThanOrEqual(abs(a - b) / abs(a), 1e-5, "conv bf16 step \(s): \(a) vs \(b)")
        }
    }

    func testBF16ResumeIsBitExact() throws {
        guard try requireBF16() else { return }
        let mnist = try AE.requireMNIST()
        let common = ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "1500", "--test-limit", "300",
                      "--batch-size", "128", "--seed", "3", "--log-every", "1", "--no-report", "--precision", "bf16"]
        let base = AE.tempDir("bf16-resume")
        let straight = try AE.mpirun(2, common + ["--epochs", "2", "--out", base + "/straight"])
        XCTAssertEqual(straight.status, 0, straight.stderr)
        let first = try AE.mpirun(2, common + ["--epochs", "1", "--out", base + "/split"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let second = try AE.mpirun(2, common + ["--epochs", "2", "--resume", "auto", "--out", base + "/split"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains("resuming from"), second.stderr)
        let a = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/straight")))
        let b = try AE.parameters(XCTUnwrap(AE.latestCheckpoint(base + "/split")))
        XCTAssertEqual(a.count, 16)
        for (k, v) in a {
            let w = try XCTUnwrap(b[k])
            XCTAssertTrue(v.elementsEqual(w, by: { $0.bitPattern == $1.bitPattern }), "\(k) differs after a bf16 resume")
        }
        XCTAssertEqual(AE.stepLosses(base + "/straight"), AE.stepLosses(base + "/split"))
        // The checkpoint records the precision in its config (and stays F32 tensors).
        let ck = try Checkpoint.read(XCTUnwrap(AE.latestCheckpoint(base + "/split")))
        XCTAssertEqual(ck.config.precision, .bf16)
    }

    func testPrecisionFlag() throws {
        let mnist = try AE.requireMNIST()
        let bad = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--precision", "fp16", "--out", AE.tempDir("badprec")])
        XCTAssertEqual(bad.status, ExitCode.usage, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--precision"), bad.stderr)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        let out = AE.tempDir("defprec")
        let ok = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--max-steps", "2", "--test-limit", "64", "--no-report", "--out", out])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(AE.json(out + "/summary.json")?["compute_precision"] as? String, "f32")
        // The default leaves the stored config as before (no precision key): older checkpoints and
        // their config hashes are unchanged.
        let ck = try Checkpoint.read(XCTUnwrap(AE.latestCheckpoint(out)))
        XCTAssertNil(ck.config.precision)
        XCTAssertFalse(ck.config.json().contains("precision"))
    }

    /// oneDNN falls back to its reference code (10–1000× slower) when it has no optimised kernel
    /// for a primitive, e.g. for mixed memory layouts, or 16-channel blocks on a CPU without
    /// AVX-512. ONEDNN_VERBOSE lists every execution with its implementation: none of the presets'
    /// may be "ref", on this CPU and with oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA, as on a CPU
    /// without AVX-512), where --precision bf16 is refused with one line.
    func testPresetsRunNoReferenceKernels() throws {
        let mnist = try AE.requireMNIST()
        for isa in ["", "AVX2"] {
            let precisions = DNNL.bf16Supported && isa.isEmpty ? ["f32", "bf16"] : ["f32"]
            var env = ["ONEDNN_VERBOSE": "1"]
            if !isa.isEmpty { env["ONEDNN_MAX_CPU_ISA"] = isa }
            for model in ["mlp3", "conv", "lstm", "vae"] {
                for p in precisions {
                    let r = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--model", model, "--batch-size", "8", "--max-steps", "2",
                                    "--test-limit", "16", "--no-report", "--precision", p, "--out", AE.tempDir("verbose")],
                                   env: env, timeout: 120)
                    XCTAssertEqual(r.status, 0, r.stderr)
                    let execs = r.stdout.split(separator: "\n").filter { $0.hasPrefix("onednn_verbose,exec,") }
                    XCTAssertGreaterThan(execs.count, 10, "\(model) \(p) \(isa): no oneDNN executions seen")
                    let ref = execs.filter { $0.split(separator: ",").dropFirst(4).first?.hasPrefix("ref") ?? true }
                    XCTAssertEqual(ref.count, 0, "\(model) \(p) \(isa): reference kernels: \(ref.prefix(3))")
                }
            }
            if isa == "AVX2" {
                let r = AE.run(["--dataset", "mnist", "--data-dir", mnist, "--precision", "bf16", "--max-steps", "1", "--out", AE.tempDir("avx2bf16")],
                               env: env)
                XCTAssertEqual(r.status, ExitCode.usage, r.stderr)
                XCTAssertTrue(r.stderr.contains("error: --precision bf16: oneDNN has no bf16 kernels for this CPU (it runs avx2 code"), r.stderr)
            }
        }
    }
}
