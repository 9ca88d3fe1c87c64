import XCTest
@testable import AutoencoderCore

final class ROCTests: XCTestCase {
    func testAUCHandComputed() {
        // Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs (pos > neg): 0.35>0.1, 0.8>0.1, 0.8>0.4
        // → 3 of 4.
        XCTAssertEqual(ROC.auc(scores: [0.1, 0.4, 0.35, 0.8], positives: [false, false, true, true]),
                       0.75, accuracy: 1e-12)
    }

    func testAUCTiesCountHalf() {
        // Positives 0.5, 0.9; negatives 0.5, 0.2. Pairs: (0.5,0.5) tie → ½, (0.5,0.2) 1,
        // (0.9,0.5) 1, (0.9,0.2) 1 → 3.5 / 4.
        XCTAssertEqual(ROC.auc(scores: [0.5, 0.9, 0.5, 0.2], positives: [true, true, false, false]),
                       0.875, accuracy: 1e-12)
        // All scores equal: ½.
        XCTAssertEqual(ROC.auc(scores: [1, 1, 1, 1, 1], positives: [true, false, true, false, false]),
                       0.5, accuracy: 1e-12)
    }

    func testAUCPerfectInverseAndDegenerate() {
        let s: [Double] = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
        XCTAssertEqual(ROC.auc(scores: s, positives: [false, false, false, true, true, true]), 1)
        XCTAssertEqual(ROC.auc(scores: s, positives: [true, true, true, false, false, false]), 0)
        XCTAssertTrue(ROC.auc(scores: s, positives: [Bool](repeating: true, count: 6)).isNaN)
    }

    func testAUCMatchesPairCountingOnRandomData() {
        var g = SplitMix64(seed: 42)
        let n = 300
        // Coarse scores so that many ties occur.
        let scores = (0..<n).map { _ in Double(Int(g.nextFloat() * 20)) / 20 }
        let pos = (0..<n).map { i in g.nextFloat() < 0.3 + 0.4 * Float(scores[i]) }
        var wins = 0.0, pairs = 0.0
        for i in 0..<n where pos[i] {
            for j in 0..<n where !pos[j] {
                pairs += 1
                wins += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0
            }
        }
        XCTAssertEqual(ROC.auc(scores: scores, positives: pos), wins / pairs, accuracy: 1e-12)
        // The trapezoidal area under the curve equals the Mann–Whitney AUC.
        let c = ROC.curve(scores: scores, positives: pos)
        var area = 0.0
        for k in 1..<c.count {
            area += (c[k].falsePositiveRate - c[k - 1].falsePositiveRate)
                * (c[k].truePositiveRate + c[k - 1].truePositiveRate) / 2
        }
        XCTAssertEqual(area, wins / pairs, accuracy: 1e-12)
    }

    func testCurvePoints() {
        let c = ROC.curve(scores: [0.1, 0.4, 0.35, 0.8], positives: [false, false, true, true])
        let pts = c.map { [$0.falsePositiveRate, $0.truePositiveRate] }
        XCTAssertEqual(pts, [[0, 0], [0, 0.5], [0.5, 0.5], [0.5, 1], [1, 1]])
        XCTAssertEqual(c.map(\.threshold).dropFirst().map { $0 }, [0.8, 0.4, 0.35, 0.1])
        XCTAssertEqual(c[0].threshold, .infinity)
    }

    func testPrecisionRecall() {
        let scores: [Double] = [0.1, 0.4, 0.35, 0.8, 0.5]
        let pos = [false, false, true, true, false]
        // > 0.3 predicts {0.4 (neg), 0.35 (pos), 0.8 (pos), 0.5 (neg)}: precision 2/4, recall 2/2.
        var pr = ROC.precisionRecall(scores: scores, positives: pos, threshold: 0.3)
        XCTAssertEqual(pr.precision, 0.5, accuracy: 1e-12)
        XCTAssertEqual(pr.recall, 1, accuracy: 1e-12)
        // Strictly greater: a score equal to the threshold is not flagged. > 0.5 → {0.8}.
        pr = ROC.precisionRecall(scores: scores, positives: pos, threshold: 0.5)
        XCTAssertEqual(pr.precision, 1, accuracy: 1e-12)
        XCTAssertEqual(pr.recall, 0.5, accuracy: 1e-12)
        // Nothing flagged.
        pr = ROC.precisionRecall(scores: scores, positives: pos, threshold: 10)
        XCTAssertEqual(pr.precision, 0)
        XCTAssertEqual(pr.recall, 0)
    }

    func testPercentileLikeNumpyLinear() {
        let v: [Double] = [15, 20, 35, 40, 50]
        // numpy.percentile(v, p): 0→15, 25→20, 40→29, 50→35, 90→46, 100→50
        XCTAssertEqual(ROC.percentile(v, 0), 15)
        XCTAssertEqual(ROC.percentile(v, 25), 20, accuracy: 1e-12)
        XCTAssertEqual(ROC.percentile(v, 40), 29, accuracy: 1e-12)
        XCTAssertEqual(ROC.percentile(v, 50), 35, accuracy: 1e-12)
        XCTAssertEqual(ROC.percentile(v, 90), 46, accuracy: 1e-12)
        XCTAssertEqual(ROC.percentile(v, 100), 50)
        // Unsorted input, even count: numpy.percentile([3,1,4,2], 95) = 3.85
        XCTAssertEqual(ROC.percentile([3, 1, 4, 2], 95), 3.85, accuracy: 1e-12)
        XCTAssertEqual(ROC.percentile([7], 33), 7)
        XCTAssertTrue(ROC.percentile([], 50).isNaN)
    }
}
