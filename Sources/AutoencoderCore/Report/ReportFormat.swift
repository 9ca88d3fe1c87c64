import Foundation

/// How the report and `compare` show values: numbers rounded for reading (the JSON files keep
/// every digit), nested objects as small tables, lists on one line.
public enum ReportFormat {
    /// 0.034812 → "0.03481", 12.3456 → "12.35", 74997.3 → "74,997", 1.5e-05 → "1.5e-05".
    public static func number(_ v: Double) -> String {
        guard v.isFinite else { return v.isNaN ? "NaN" : (v > 0 ? "∞" : "−∞") }
        if v == 0 { return "0" }
        if abs(v) >= 1000 { return grouped(Int(v.rounded())) }
        return String(format: "%.4g", v)
    }

    /// 1234567 → "1,234,567".
    public static func grouped(_ i: Int) -> String {
        let digits = String(i.magnitude)
        var out = ""
        for (n, c) in digits.enumerated() {
            if n > 0 && (digits.count - n) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (i < 0 ? "-" : "") + out
    }

    /// Seconds as "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min".
    public static func duration(_ s: Double) -> String {
        guard s.isFinite && s >= 0 else { return number(s) }
        if s < 1 { return String(format: "%.0f ms", s * 1000) }
        if s < 60 { return String(format: "%.1f s", s) }
        if s < 3600 { return String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60) }
        return String(format: "%d h %02d min", Int(s) / 3600, (Int(s) % 3600) / 60)
    }

    /// A JSON value as plain text (compare's stdout table, one-line cells).
    public static func text(_ v: Any?) -> String {
        switch v {
        case nil: return "–"
        case is NSNull: return "null"
        case let b as Bool where isBool(v!): return b ? "true" : "false"
        case let i as Int: return abs(i) >= 10_000 ? grouped(i) : String(i)
        case let d as Double: return number(d)
        case let s as String: return s
        case let a as [Any]: return a.map { text($0) }.joined(separator: ", ")
        case let o as [String: Any]: return o.keys.sorted().map { "\($0) \(text(o[$0]))" }.joined(separator: ", ")
        default: return "\(v!)"
        }
    }

    /// A JSON true/false (Foundation's parser gives booleans and integers as NSNumber, and
    /// both cast to Bool and Int; only a boolean's class says which).
    public static func isBool(_ v: Any) -> Bool {
        type(of: v) == Bool.self || String(describing: type(of: v)).contains("Boolean")
    }

    /// A JSON value as HTML: objects as a small key/value table, everything else as text.
    public static func html(_ v: Any?) -> String {
        if let o = v as? [String: Any] {
            var h = "<table class=\"sub\">"
            for k in o.keys.sorted() { h += "<tr><th>\(Report.htmlEscape(k))</th><td>\(html(o[k]))</td></tr>" }
            return h + "</table>"
        }
        return Report.htmlEscape(text(v))
    }

    /// Base64 data URI of a file's bytes (compare.html carries its images inside).
    public static func dataURI(_ data: Data, type: String) -> String { "data:\(type);base64," + data.base64EncodedString() }
}
