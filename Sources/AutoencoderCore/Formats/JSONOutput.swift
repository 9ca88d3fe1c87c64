import Foundation

public let aetrainVersion = "0.1.0"

/// JSON helpers for metrics.jsonl and summary.json (keys sorted, numbers as JSON numbers).
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

/// Appends JSON Lines to OUT/metrics.jsonl (rank 0 only), flushed at every line so a crash
/// loses nothing already reported.
public final class MetricsWriter {
    let fd: Int32
    public let path: String
    private var warned = false

    /// `keepUpToStep`: on resume, keep only the lines up to the checkpoint's step.
    public init(path: String, keepUpToStep: Int?) throws {
        self.path = path
        var kept = ""
        if let limit = keepUpToStep, let old = try? String(contentsOfFile: path, encoding: .utf8) {
            for line in old.split(separator: "\n") {
                if let obj = JSON.parseObject(String(line)), let s = obj["step"] as? Int, s <= limit {
                    kept += line + "\n"
                }
            }
        }
        try AtomicFile.write(kept.data(using: .utf8)!, to: URL(fileURLWithPath: path))
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        if fd < 0 { throw AETError.io("\(path): cannot open for writing: \(String(cString: strerror(errno)))") }
    }

    /// Appends one line. A failed write (disk full) warns once and training goes on: the
    /// checkpoint policy decides what a full disk means for the run.
    public func write(_ line: some Encodable) {
        let text: String
        do {
            text = try JSON.encode(line) + "\n"
        } catch {
            return warnOnce("cannot encode a metrics line: \(error)")
        }
        let ok = text.utf8CString.withUnsafeBufferPointer { b in
            Foundation.write(fd, b.baseAddress!, b.count - 1) == b.count - 1
        }
        if !ok { warnOnce("cannot append metrics: \(String(cString: strerror(errno)))") }
    }

    private func warnOnce(_ message: String) {
        guard !warned else { return }
        warned = true
        printError("warning: \(path): \(message)")
    }

    public func close() { Foundation.close(fd) }
}

/// Progress on stderr: a bar when stderr is a TTY, plain periodic lines otherwise (cluster logs).
public struct Progress {
    public let tty: Bool = isatty(2) != 0

    public func update(epoch: Int, epochs: Int, batch: Int, batches: Int, step: Int, loss: Double, rate: Double) {
        if tty {
            let width = 30
            let frac = Double(batch) / Double(max(batches, 1))
            let filled = Int(frac * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = String(format: "\repoch %d/%d %@ %3.0f%% step %d loss %.5f %.0f samples/s ",
                              epoch, epochs, bar, frac * 100, step, loss, rate)
            fputs(line, stderr)
        } else {
            printError(String(format: "epoch %d/%d step %d loss %.6f samples/s %.0f", epoch, epochs, step, loss, rate))
        }
    }

    public func endLine() {
        if tty { fputs("\n", stderr) }
    }
}
