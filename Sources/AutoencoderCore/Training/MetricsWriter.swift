import Foundation

/// Appends JSON Lines to OUT/metrics.jsonl (rank 0 only). Each line is one `write`; a line that
/// cannot be written whole (disk full, file too large: a failed or short write) is cut off again
/// (`ftruncate` back to the end of the last whole line), so the file only ever holds whole lines.
/// metrics.jsonl is used only when it is a regular file (or a new path): a FIFO or device there is
/// an error, never waited on or replaced.
public final class MetricsWriter {
    let fd: Int32
    public let path: String
    /// Bytes of whole lines in the file: where a failed line is cut back to.
    private var size: off_t
    private var warned = false

    /// `keepUpToStep`: on resume, keep only the lines up to the checkpoint's step.
    public init(path: String, keepUpToStep: Int?) throws {
        self.path = path
        var st = stat()
        let exists = stat(path, &st) == 0
        if exists && st.st_mode & S_IFMT != S_IFREG {
            throw AETError.io("\(path): is \(InputFile.kind(st.st_mode)), not a regular file; refusing to use it as metrics.jsonl")
        }
        var kept = ""
        if let limit = keepUpToStep, exists {
            let old: Data
            do { old = try InputFile.readAll(path, what: "metrics.jsonl") } catch let e as AETError { throw AETError.io(e.message) }
            for line in String(decoding: old, as: UTF8.self).split(separator: "\n") {
                if let obj = JSON.parseObject(String(line)), let s = obj["step"] as? Int, s <= limit {
                    kept += line + "\n"
                }
            }
        }
        try AtomicFile.write(kept.data(using: .utf8)!, to: URL(fileURLWithPath: path))
        // O_NONBLOCK: should something else be there by now, opening it cannot block; fstat decides.
        let fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        if fd < 0 { throw AETError.io("\(path): cannot open for writing: \(String(cString: strerror(errno)))") }
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            Foundation.close(fd)
            throw AETError.io("\(path): is \(InputFile.kind(st.st_mode)), not a regular file; refusing to use it as metrics.jsonl")
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        self.fd = fd
        size = st.st_size
    }

    /// Appends one line, whole or not at all. A failed write warns once (with its errno) and
    /// training goes on: the checkpoint policy decides what a full disk means for the run.
    public func write(_ line: some Encodable) {
        let text: String
        do {
            text = try JSON.encode(line) + "\n"
        } catch {
            return warnOnce("cannot encode a metrics line: \(error)")
        }
        let err: Int32 = text.utf8CString.withUnsafeBufferPointer { b in
            let count = b.count - 1
            let n = Foundation.write(fd, b.baseAddress!, count)
            if n == count { return 0 }
            if n < 0 { return errno }
            // A short write: the rest once more, which fails with the cause (ENOSPC, EFBIG) or,
            // should space have appeared, completes the line.
            let m = Foundation.write(fd, b.baseAddress! + n, count - n)
            if m == count - n { return 0 }
            return m < 0 ? errno : EIO
        }
        if err == 0 {
            size += off_t(text.utf8.count)
            return
        }
        let cut = ftruncate(fd, size) == 0
        warnOnce("cannot append metrics: \(String(cString: strerror(err)))" + (cut ? "; lines that do not fit are left out whole" : ""))
    }

    private func warnOnce(_ message: String) {
        guard !warned else { return }
        warned = true
        printError("warning: \(path): \(message)")
    }

    public func close() { Foundation.close(fd) }
}
