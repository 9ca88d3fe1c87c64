import XCTest
import TestSupport
@testable import AutoencoderCore

/// What users look at, end to end through the CLI: the report folder, the PCA baseline, anomaly
/// detection, denoising and VAE generation.
final class ApplicationsTests: XCTestCase {
    func testTrainWritesReportAndPCABaseline() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("report")
        let r = try AE.mpirun(2, ["--dataset", "mnist", "--data-dir", mnist, "--model", "denoising", "--train-limit", "2000",
                                  "--test-limit", "500", "--epochs", "1", "--log-every", "4", "--out", out], timeout: 180)
        XCTAssertEqual(r.status, 0, r.stderr)
        for f in ["reconstructions.png", "latent.svg", "loss.svg", "report.html"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/report/" + f), f)
        }
        let png = try Data(contentsOf: URL(fileURLWithPath: out + "/report/reconstructions.png"))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // Denoising runs show three rows (noisy, clean, denoised) of 10 classes: 3·(28·3) + gaps tall.
        let height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
        XCTAssertGreaterThan(height, 3 * 84)
        let s = try XCTUnwrap(AE.json(out + "/summary.json"))
        let pca = try XCTUnwrap(s["pca_test_mse"] as? Double)
        XCTAssertEqual(s["pca_components"] as? Int, 32)
        XCTAssertTrue(pca > 0 && pca < 0.0675, "PCA-32 beats the mean image: \(pca)")
        let html = try String(contentsOfFile: out + "/report/report.html", encoding: .utf8)
        XCTAssertTrue(html.contains("PCA"), "report.html has the PCA comparison")
        XCTAssertTrue(html.contains("test_mse"))
    }

    func testAnomalyDetectionScoresEveryTestImage() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("anomaly")
        let r = try AE.mpirun(2, ["anomaly", "--dataset", "mnist", "--data-dir", mnist, "--model", "deep32", "--normal-class", "1",
                                  "--train-limit", "20000", "--test-limit", "1000", "--epochs", "3", "--no-report", "--out", out],
                              timeout: 180)
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try XCTUnwrap(AE.json(out + "/summary.json"))
        let auc = try XCTUnwrap(s["roc_auc"] as? Double)
        XCTAssertGreaterThan(auc, 0.8, "1s are easy to reconstruct from a model of 1s only")
        XCTAssertEqual((s["per_class_mean_error"] as? [String: Double])?.count, 10)
        for k in ["threshold", "precision", "recall"] { XCTAssertNotNil(s[k], k) }
        XCTAssertLessThan(s["train_set_size"] as! Int, 3000, "trained on class 1 only (about 11% of 20000)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/report/anomaly_hist.svg"))
        // Scoring the final checkpoint again gives the same ROC-AUC.
        let again = try AE.mpirun(2, ["anomaly", "--dataset", "mnist", "--data-dir", mnist, "--normal-class", "1",
                                      "--test-limit", "1000", "--checkpoint", try XCTUnwrap(AE.latestCheckpoint(out)),
                                      "--out", out + "/rescored"], timeout: 120)
        XCTAssertEqual(again.status, 0, again.stderr)
        let s2 = try XCTUnwrap(AE.json(out + "/rescored/summary.json"))
        XCTAssertEqual(try XCTUnwrap(s2["roc_auc"] as? Double), auc, accuracy: 1e-12)
    }

    /// `denoise` on a trained denoising model: the denoised test images are closer to the clean
    /// ones than the noisy inputs (PSNR), and closer than those of the same architecture trained on
    /// clean inputs (deep32 = denoising without --noise, same seed and steps) — so training really
    /// saw corrupted inputs against clean targets. 626 steps each, release binary.
    func testDenoisingModelDenoises() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        let base = AE.tempDir("denoise")
        var psnr: [String: (noisy: Double, denoised: Double)] = [:]
        for model in ["deep32", "denoising"] {
            let out = base + "/" + model
            let t = AE.exec([release, "--dataset", "mnist", "--data-dir", mnist, "--model", model, "--train-limit", "20000",
                             "--test-limit", "200", "--epochs", "2", "--batch-size", "64", "--seed", "2", "--no-report", "--out", out])
            XCTAssertEqual(t.status, 0, t.stderr)
            let d = AE.exec([release, "denoise", "--checkpoint", try AE.checkpoint(out), "--data-dir", mnist, "--limit", "500",
                             "--noise", "gaussian:0.5", "--output", out + "/grid.png"])
            XCTAssertEqual(d.status, 0, d.stderr)
            let o = try XCTUnwrap(JSON.parseObject(d.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), d.stdout)
            XCTAssertEqual(o["count"] as? Int, 500)
            psnr[model] = (try XCTUnwrap(o["psnr_noisy_db"] as? Double), try XCTUnwrap(o["psnr_denoised_db"] as? Double))
        }
        let plain = try XCTUnwrap(psnr["deep32"]), dae = try XCTUnwrap(psnr["denoising"])
        Compare.allFinite("PSNR", [plain.noisy, plain.denoised, dae.noisy, dae.denoised])
        XCTAssertEqual(plain.noisy, dae.noisy, "the same noise (seed 0) for both models")
        XCTAssertGreaterThan(dae.denoised, dae.noisy + 3, "denoised \(dae.denoised) dB vs noisy \(dae.noisy) dB")
        XCTAssertGreaterThan(dae.denoised, plain.denoised + 1,
                             "the denoising model (\(dae.denoised) dB) must denoise better than deep32 trained on clean inputs (\(plain.denoised) dB)")
    }

    func testDenoiseAndGenerateCommands() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("apps")
        XCTAssertEqual(AE.run(["--dataset", "mnist", "--data-dir", mnist, "--model", "vae", "--train-limit", "2000",
                               "--test-limit", "200", "--epochs", "1", "--no-report", "--out", out]).status, 0)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        let d = AE.run(["denoise", "--checkpoint", ck, "--data-dir", mnist, "--limit", "100", "--noise", "salt-pepper:0.3",
                        "--output", out + "/dn.png"])
        XCTAssertEqual(d.status, 0, d.stderr)
        let o = try XCTUnwrap(JSON.parseObject(d.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let noisy = try XCTUnwrap(o["psnr_noisy_db"] as? Double), denoised = try XCTUnwrap(o["psnr_denoised_db"] as? Double)
        Compare.allFinite("PSNR", [noisy, denoised])
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/dn.png"))
        let g = AE.run(["generate", "--checkpoint", ck, "--count", "16", "--output", out + "/s.npy"])
        XCTAssertEqual(g.status, 0, g.stderr)
        XCTAssertEqual(try NPY.read(URL(fileURLWithPath: out + "/s.npy")).shape, [16, 28, 28])
        XCTAssertEqual(AE.run(["generate", "--checkpoint", ck, "--count", "16", "--output", out + "/s.png"]).status, 0)
        // generate refuses a model that is not a VAE, in one line.
        XCTAssertEqual(AE.run(["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--test-limit", "64",
                               "--epochs", "1", "--no-report", "--out", out + "/ae"]).status, 0)
        let bad = AE.run(["generate", "--checkpoint", try XCTUnwrap(AE.latestCheckpoint(out + "/ae")), "--output", out + "/x.png"])
        XCTAssertEqual(bad.status, ExitCode.usage)
        XCTAssertTrue(bad.stderr.contains("not a VAE"), bad.stderr)
    }
}
