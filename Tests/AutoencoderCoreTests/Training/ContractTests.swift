import Foundation
import XCTest
@testable import AutoencoderCore

/// The output contracts: README.md's metrics.jsonl and summary.json tables list exactly the keys
/// of `MetricsLine` and `RunSummary`, and those types write the JSON the dictionaries they
/// replaced wrote (same keys, same value types, `null` for non-finite numbers).
final class ContractTests: XCTestCase {
    static let readme: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)) ?? ""
    }()

    /// The rows of the first Markdown table after the line containing `marker`: cells, trimmed.
    static func table(after marker: String) -> [[String]] {
        let lines = readme.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.contains(marker) }) else { return [] }
        var rows: [[String]] = []
        for line in lines[(start + 1)...] {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("|") {
                let cells = t.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                if cells.first != "key" && !(cells.first ?? "").hasPrefix("---") { rows.append(cells) }
            } else if !rows.isEmpty {
                break
            }
        }
        return rows
    }

    /// The `code` spans of a cell.
    static func names(_ cell: String) -> [String] {
        cell.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    func testREADMEMetricsTableListsTheMetricsLineKeys() {
        let rows = Self.table(after: "**`metrics.jsonl`**")
        XCTAssertFalse(rows.isEmpty, "no metrics.jsonl key table in README.md")
        var step: [String] = [], evaluation: [String] = []
        for r in rows {
            XCTAssertEqual(r.count, 3, "metrics table row \(r)")
            let keys = Self.names(r[0])
            if r[1].contains("step") { step += keys }
            if r[1].contains("evaluation") { evaluation += keys }
        }
        XCTAssertEqual(step.sorted(), MetricsLine.Step.CodingKeys.allCases.map(\.stringValue).sorted())
        XCTAssertEqual(evaluation.sorted(), MetricsLine.Evaluation.CodingKeys.allCases.map(\.stringValue).sorted())
    }

    func testREADMESummaryTableListsTheRunSummaryKeys() {
        let rows = Self.table(after: "**`summary.json`**")
        XCTAssertFalse(rows.isEmpty, "no summary.json key table in README.md")
        let keys = rows.flatMap { Self.names($0[0]) }
        XCTAssertEqual(keys.count, Set(keys).count, "a key is listed twice: \(keys)")
        XCTAssertEqual(keys.sorted(), RunSummary.CodingKeys.allCases.map(\.stringValue).sorted())
        // ms_per_step's parts are named in its row.
        let ms = try? XCTUnwrap(rows.first { Self.names($0[0]) == ["ms_per_step"] })
        XCTAssertEqual(Self.names(ms?[2] ?? "").sorted(), RunSummary.PhaseMilliseconds.CodingKeys.allCases.map(\.stringValue).sorted())
    }

    /// Every key a typed value sets is written, with the JSON value types the old dictionaries
    /// held (integers stay integers, a non-finite number is null, nested objects and arrays).
    func testTypedSummaryWritesTheDictionaryItReplaced() throws {
        var s = RunSummary(model: "mlp3")
        s.dataset = "mnist"; s.worldSize = 2; s.steps = 469; s.trainLoss = .nan; s.testMSE = 0.0348
        s.msPerStep = .init(data: 0.1, forward: 0.2, backward: 0.3, allreduce: 0.05, optimizer: 0.04, total: 0.7)
        s.peakRssMbPerRank = [71.5, 70.25]; s.perClassMeanError = ["T-shirt/top": 0.02, "Ankle boot": 0.03]
        s.samplesPerSecond = 1_000_000
        let dict: [String: Any] = [
            "model": "mlp3", "dataset": "mnist", "world_size": 2, "steps": 469, "train_loss": Double.nan, "test_mse": 0.0348,
            "ms_per_step": ["data": 0.1, "forward": 0.2, "backward": 0.3, "allreduce": 0.05, "optimizer": 0.04, "total": 0.7],
            "peak_rss_mb_per_rank": [71.5, 70.25], "per_class_mean_error": ["T-shirt/top": 0.02, "Ankle boot": 0.03],
            "samples_per_second": 1_000_000.0,
        ]
        for pretty in [false, true] {
            XCTAssertEqual(try JSON.encode(s, pretty: pretty), JSON.encode(dict, pretty: pretty))
        }
        let o = try s.jsonObject()
        XCTAssertTrue(o["steps"] is Int, "an Int field must stay an integer (the report formats it with \\(v))")
        XCTAssertTrue(o["samples_per_second"] is Double, "a Double field must stay a Double (the report formats it with %.6g)")
        XCTAssertTrue((o["train_loss"] as? Double)?.isNaN ?? false)
        XCTAssertNil(o["test_kl"], "an unset key is not written")
        XCTAssertTrue(try JSON.encode(s).contains("\"train_loss\":null"))
    }

    /// The README's example lines are lines the types write.
    func testREADMEExampleLinesAreWhatTheTypesWrite() throws {
        let lines = Self.readme.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.contains("**`metrics.jsonl`**") }) else { return XCTFail("no metrics.jsonl in README.md") }
        let text = lines[start..<min(start + 8, lines.count)].joined(separator: " ")
        let examples = Self.names(text).filter { $0.hasPrefix("{") }
        XCTAssertEqual(examples.count, 2, "expected a step and an evaluation example: \(examples)")
        for e in examples {
            let written = e.contains("test_mse") ? try JSON.encode(JSON.decode(MetricsLine.Evaluation.self, from: e))
                                                 : try JSON.encode(JSON.decode(MetricsLine.Step.self, from: e))
            XCTAssertEqual(written, e)
        }
    }

    /// A line read back decodes to the same value, `null` as NaN.
    func testMetricsLinesRoundTrip() throws {
        let step = MetricsLine.Step(step: 50, epoch: 1, loss: .nan, samplesPerSecond: 71234.5, samples: 128, lr: 0.001, recon: 0.03, kl: 2.5)
        let text = try JSON.encode(step)
        XCTAssertEqual(text, "{\"epoch\":1,\"kl\":2.5,\"loss\":null,\"lr\":0.001,\"recon\":0.03,\"samples\":128,\"samples_per_second\":71234.5,\"step\":50}")
        let back = try JSON.decode(MetricsLine.Step.self, from: text)
        XCTAssertTrue(back.loss.isNaN)
        XCTAssertEqual(try JSON.encode(back), text)
        let eval = MetricsLine.Evaluation(epoch: 1, step: 469, testMSE: 0.0348, testBCE: 0.35, trainLoss: 0.0532)
        XCTAssertEqual(try JSON.encode(eval), "{\"epoch\":1,\"step\":469,\"test_bce\":0.35,\"test_mse\":0.0348,\"train_loss\":0.0532}")
    }
}
