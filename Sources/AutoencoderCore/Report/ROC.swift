import Foundation

/// ROC analysis for anomaly scores: "positive" means anomaly, and a higher score means more
/// anomalous. NaN scores are treated as +infinity (the most anomalous), so a diverged model
/// cannot crash the report.
public enum ROC {
    /// One point of the ROC curve: the rates when predicting "anomaly" for score >= threshold.
    public struct Point: Equatable, Sendable {
        public var falsePositiveRate: Double
        public var truePositiveRate: Double
        public var threshold: Double
    }

    /// Area under the ROC curve, equal to the Mann–Whitney probability that a random positive
    /// scores above a random negative, ties counting 1/2. NaN when either class is empty.
    public static func auc(scores: [Double], positives: [Bool]) -> Double {
        precondition(scores.count == positives.count, "ROC.auc: \(scores.count) scores, \(positives.count) labels")
        let s = scores.map(clean)
        let order = s.indices.sorted { s[$0] < s[$1] }
        var nPos = 0.0, nNeg = 0.0, rankSumPos = 0.0
        var i = 0
        while i < order.count {
            var j = i
            while j < order.count && s[order[j]] == s[order[i]] { j += 1 }
            let avgRank = Double(i + 1 + j) / 2  // mean of the 1-based ranks i+1 ... j
            for t in i..<j {
                if positives[order[t]] { rankSumPos += avgRank; nPos += 1 } else { nNeg += 1 }
            }
            i = j
        }
        guard nPos > 0 && nNeg > 0 else { return .nan }
        return (rankSumPos - nPos * (nPos + 1) / 2) / (nPos * nNeg)
    }

    /// The ROC curve from (0, 0) (threshold +∞) to (1, 1): one point per distinct score,
    /// in decreasing threshold order. Rates are 0 when a class is empty.
    public static func curve(scores: [Double], positives: [Bool]) -> [Point] {
        precondition(scores.count == positives.count, "ROC.curve: \(scores.count) scores, \(positives.count) labels")
        let s = scores.map(clean)
        let order = s.indices.sorted { s[$0] > s[$1] }
        let p = Double(positives.filter { $0 }.count), n = Double(positives.count) - p
        var points = [Point(falsePositiveRate: 0, truePositiveRate: 0, threshold: .infinity)]
        var tp = 0.0, fp = 0.0
        var i = 0
        while i < order.count {
            let t = s[order[i]]
            while i < order.count && s[order[i]] == t {
                if positives[order[i]] { tp += 1 } else { fp += 1 }
                i += 1
            }
            points.append(Point(falsePositiveRate: n > 0 ? fp / n : 0,
                                truePositiveRate: p > 0 ? tp / p : 0, threshold: t))
        }
        return points
    }

    /// Precision and recall of the rule "anomaly iff score > threshold". Precision is 0 when
    /// nothing is predicted anomalous; recall is 0 when there are no positives.
    public static func precisionRecall(scores: [Double], positives: [Bool], threshold: Double)
        -> (precision: Double, recall: Double) {
        precondition(scores.count == positives.count)
        var tp = 0, fp = 0, fn = 0
        for (s, pos) in zip(scores, positives) {
            let predicted = clean(s) > threshold
            if predicted && pos { tp += 1 } else if predicted { fp += 1 } else if pos { fn += 1 }
        }
        let precision = tp + fp > 0 ? Double(tp) / Double(tp + fp) : 0
        let recall = tp + fn > 0 ? Double(tp) / Double(tp + fn) : 0
        return (precision, recall)
    }

    /// The p-th percentile (p in 0...100) with linear interpolation between closest ranks,
    /// like numpy's default (`method="linear"`). NaN for an empty input.
    public static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let a = values.map(clean).sorted()
        let q = min(100, max(0, p)) / 100
        let h = q * Double(a.count - 1)
        let lo = Int(h.rounded(.down)), hi = min(lo + 1, a.count - 1)
        let frac = h - Double(lo)
        if frac == 0 || a[lo] == a[hi] { return a[lo] }
        return a[lo] + (a[hi] - a[lo]) * frac
    }

    @inline(__always) static func clean(_ v: Double) -> Double { v.isNaN ? .infinity : v }
}
