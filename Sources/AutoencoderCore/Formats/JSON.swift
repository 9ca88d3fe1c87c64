import Foundation

/// JSON as aetrain writes it (summary.json, metrics.jsonl, the commands' JSON output): keys sorted,
/// slashes unescaped, numbers as JSON numbers, non-finite numbers `null`.
public enum JSON {
    public static func encode(_ obj: [String: Any], pretty: Bool = false) -> String {
        let opts: JSONSerialization.WritingOptions = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        let clean = obj.mapValues(sanitize)
        let data = try! JSONSerialization.data(withJSONObject: clean, options: opts)
        return String(data: data, encoding: .utf8)!
    }

    /// Non-finite numbers become null (JSON has no NaN).
    static func sanitize(_ v: Any) -> Any {
        if let d = v as? Double { return d.isFinite ? d : NSNull() }
        if let f = v as? Float { return f.isFinite ? Double(f) : NSNull() }
        if let dict = v as? [String: Any] { return dict.mapValues(sanitize) }
        if let arr = v as? [Any] { return arr.map(sanitize) }
        return v
    }

    /// A typed value (summary.json, a metrics line) as JSON: the same serializer, options and
    /// number formatting as `encode(_: [String: Any])` (keys sorted, non-finite numbers null).
    public static func encode(_ value: some Encodable, pretty: Bool = false) throws -> String {
        guard let obj = try JSONObjectEncoder.object(value) as? [String: Any] else {
            throw AETError("JSON: \(type(of: value)) does not encode as an object")
        }
        return encode(obj, pretty: pretty)
    }

    /// Reads a typed value back (tests, tools). `null`, which is how a non-finite number is
    /// written, decodes as NaN.
    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        func nullsAsNaN(_ v: Any) -> Any {
            if v is NSNull { return "nan" }
            if let d = v as? [String: Any] { return d.mapValues(nullsAsNaN) }
            if let a = v as? [Any] { return a.map(nullsAsNaN) }
            return v
        }
        let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        let data = try JSONSerialization.data(withJSONObject: nullsAsNaN(parsed), options: [.fragmentsAllowed])
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try decoder.decode(T.self, from: data)
    }

    public static func parseObject(_ s: String) -> [String: Any]? {
        guard let d = s.data(using: .utf8) else { return nil }
        return (try? JSONSerialization.jsonObject(with: d)) as? [String: Any]
    }
}
