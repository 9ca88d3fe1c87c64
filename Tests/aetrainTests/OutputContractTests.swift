import Foundation
import XCTest
@testable import AutoencoderCore

/// What a real run writes is what the typed contracts write: summary.json and every
/// metrics.jsonl line decode into `RunSummary` / `MetricsLine` and encode back to the same
/// bytes, so no key is written that the types do not know. Two short runs (a VAE with the
/// report; a sparse model with noise, resumed), about 10 s.
final class OutputContractTests: XCTestCase {
    func testOutputsRoundTripThroughTheTypes() throws {
        let mnist = try AE.requireMNIST()
        let base = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--test-limit", "100",
                    "--batch-size", "64", "--log-every", "2", "--epochs", "2"]
        let vae = AE.tempDir("contract-vae"), sparse = AE.tempDir("contract-sparse")
        let a = AE.run(base + ["--model", "vae", "--out", vae])
        XCTAssertEqual(a.status, 0, a.stderr)
        let b = AE.run(base + ["--model", "sparse-l1", "--noise", "gaussian:0.3", "--max-steps", "5", "--no-report", "--out", sparse])
        XCTAssertEqual(b.status, 0, b.stderr)
        let c = AE.run(base + ["--model", "sparse-l1", "--noise", "gaussian:0.3", "--resume", "auto", "--no-report", "--out", sparse])
        XCTAssertEqual(c.status, 0, c.stderr)
        var seen = Set<String>()
        for out in [vae, sparse] {
            let text = try String(contentsOfFile: out + "/summary.json", encoding: .utf8)
            let summary = try JSON.decode(RunSummary.self, from: text)
            XCTAssertEqual(try JSON.encode(summary, pretty: true) + "\n", text, out)
            seen.formUnion(try summary.jsonObject().keys)
            let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map(String.init)
            XCTAssertGreaterThan(lines.count, 3)
            for line in lines {
                let again = line.contains("\"test_mse\"") ? try JSON.encode(JSON.decode(MetricsLine.Evaluation.self, from: line))
                                                          : try JSON.encode(JSON.decode(MetricsLine.Step.self, from: line))
                XCTAssertEqual(again, line)
                seen.formUnion(JSON.parseObject(line)?.keys.map { $0 } ?? [])
            }
        }
        // The runs reached the optional keys: VAE terms, penalty, noise, report, resume.
        for k in ["kl", "recon", "penalty", "test_kl", "noise", "pca_test_mse", "report", "resumed_from_step", "train_loss"] {
            XCTAssertTrue(seen.contains(k), "no run wrote \(k)")
        }
    }
}
