import Foundation

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
