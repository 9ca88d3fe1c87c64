import XCTest

/// The one way the tests compare numbers. Every check here fails
///
/// - when the two sides have different lengths (`zip` would silently drop the tail),
/// - when any value on either side is NaN or ±Inf (a NaN makes `err > tol` false and leaves
///   `max(worst, err)` unchanged, so comparisons written that way pass on NaN),
/// - and wherever `!(|actual − expected| <= tolerance)` (written so that NaN fails).
///
/// The tolerance is `atol + rtol · max(|actual|, |expected|)` unless a closure gives it per element.
/// A failure is one XCTFail naming how many values are off, the first few with their index (or
/// label), and the worst |difference| / tolerance.
public enum Compare {
    /// Element-wise comparison with a per-element tolerance `tolerance(i, actual, expected)`.
    @discardableResult
    public static func elementwise(_ what: String, _ actual: [Double], _ expected: [Double],
                                   tolerance: (Int, Double, Double) -> Double,
                                   label: (Int) -> String = { "[\($0)]" }, maxReports: Int = 5,
                                   file: StaticString = #filePath, line: UInt = #line) -> Bool {
        guard actual.count == expected.count else {
            XCTFail("\(what): lengths differ (actual \(actual.count), expected \(expected.count))", file: file, line: line)
            return false
        }
        var bad: [String] = []
        var failures = 0
        var worst = 0.0, worstAt = ""
        for i in 0..<actual.count {
            let a = actual[i], e = expected[i]
            let tol = tolerance(i, a, e)
            let err = abs(a - e)
            let ok = a.isFinite && e.isFinite && tol.isFinite && err <= tol
            if a.isFinite && e.isFinite {
                let ratio = err / max(tol, .leastNormalMagnitude)
                if ratio > worst { worst = ratio; worstAt = label(i) }
            }
            if !ok {
                failures += 1
                if bad.count < maxReports {
                    let why = !(a.isFinite && e.isFinite) ? "non-finite" : "|diff| \(err) > tol \(tol)"
                    bad.append("\(label(i)): actual \(a), expected \(e) (\(why))")
                }
            }
        }
        if failures > 0 {
            XCTFail("\(what): \(failures) of \(actual.count) values off; worst |diff|/tol \(worst) at \(worstAt); "
                    + bad.joined(separator: "; "), file: file, line: line)
        }
        return failures == 0
    }

    /// |actual − expected| <= atol + rtol · max(|actual|, |expected|) for every element.
    @discardableResult
    public static func close<A: BinaryFloatingPoint, E: BinaryFloatingPoint>(
        _ what: String, _ actual: [A], _ expected: [E], rtol: Double = 0, atol: Double = 0,
        label: (Int) -> String = { "[\($0)]" }, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        elementwise(what, actual.map { Double($0) }, expected.map { Double($0) },
                    tolerance: { _, a, e in atol + rtol * max(abs(a), abs(e)) }, label: label, file: file, line: line)
    }

    /// Scalar form of `close`.
    @discardableResult
    public static func close(_ what: String, _ actual: Double, _ expected: Double, rtol: Double = 0, atol: Double = 0,
                             file: StaticString = #filePath, line: UInt = #line) -> Bool {
        elementwise(what, [actual], [expected], tolerance: { _, a, e in atol + rtol * max(abs(a), abs(e)) },
                    label: { _ in "value" }, file: file, line: line)
    }

    /// Equal to the bit, every value finite, same length.
    @discardableResult
    public static func identical(_ what: String, _ actual: [Float], _ expected: [Float],
                                 file: StaticString = #filePath, line: UInt = #line) -> Bool {
        guard actual.count == expected.count else {
            XCTFail("\(what): lengths differ (actual \(actual.count), expected \(expected.count))", file: file, line: line)
            return false
        }
        var failures = 0
        var first: [String] = []
        for i in 0..<actual.count
        where !(actual[i].isFinite && expected[i].isFinite && actual[i].bitPattern == expected[i].bitPattern) {
            failures += 1
            if first.count < 5 { first.append("[\(i)]: \(actual[i]) vs \(expected[i])") }
        }
        if failures > 0 {
            XCTFail("\(what): \(failures) of \(actual.count) values differ in their bits; " + first.joined(separator: "; "),
                    file: file, line: line)
        }
        return failures == 0
    }

    /// Every value finite.
    @discardableResult
    public static func allFinite<T: BinaryFloatingPoint>(_ what: String, _ values: [T],
                                                         file: StaticString = #filePath, line: UInt = #line) -> Bool {
        let bad = values.indices.filter { !values[$0].isFinite }
        if !bad.isEmpty {
            XCTFail("\(what): \(bad.count) of \(values.count) values are not finite (first at [\(bad[0])]: \(values[bad[0]]))",
                    file: file, line: line)
        }
        return bad.isEmpty
    }

    /// Named tensors: the same names on both sides, and `close` on every tensor. `atolFraction`
    /// adds an absolute slack of that fraction of the tensor's largest |expected| value.
    @discardableResult
    public static func tensors(_ what: String, _ actual: [String: [Float]], _ expected: [String: [Float]],
                               rtol: Double = 0, atol: Double = 0, atolFraction: Double = 0,
                               file: StaticString = #filePath, line: UInt = #line) -> Bool {
        guard Set(actual.keys) == Set(expected.keys) else {
            XCTFail("\(what): tensor names differ: only in actual \(Set(actual.keys).subtracting(expected.keys).sorted()), "
                    + "only in expected \(Set(expected.keys).subtracting(actual.keys).sorted())", file: file, line: line)
            return false
        }
        var ok = true
        for name in expected.keys.sorted() {
            let e = expected[name]!
            let scale = e.reduce(0) { max($0, Double(abs($1))) }
            let slack = atol + atolFraction * scale
            ok = close("\(what): \(name)", actual[name]!, e, rtol: rtol, atol: slack, file: file, line: line) && ok
        }
        return ok
    }
}

/// An error that fails the test that throws it (where XCTSkip would only skip it): for missing
/// data, tools or preconditions. A skip is a failure here; the message says what to provide.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
