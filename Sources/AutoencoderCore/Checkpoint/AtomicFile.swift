import Foundation

/// Crash-safe file writes: temp file in the same directory → write → fsync → rename → fsync(dir).
/// A crash at any instant leaves either the old file or the new one, never a torn file.
public enum AtomicFile {
    /// Test hook: when set to a path prefix, a write whose destination starts with it stops
    /// (the process exits with code 99) right after the temp file is written and synced,
    /// simulating a crash before the rename. Read from the environment variable
    /// AETRAIN_TEST_CRASH_AFTER_TEMP.
    static let crashAfterTemp: String? = FaultInjection.current.crashAfterTemp

    public static func write(_ data: Data, to url: URL) throws {
        try data.withUnsafeBytes { raw in
            try write(bytes: raw, to: url)
        }
    }

    public static func write(bytes: UnsafeRawBufferPointer, to url: URL) throws {
        try write(to: url) { fd in
            var off = 0
            while off < bytes.count {
                let n = Foundation.write(fd, bytes.baseAddress! + off, bytes.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                off += n
            }
            return 0
        }
    }

    /// Writes through a callback that gets the temp file's descriptor and returns 0 or an errno.
    public static func write(to url: URL, body: (Int32) throws -> Int32) throws {
        let path = url.path
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            throw AETError.io("\(path): cannot create temp file: \(String(cString: strerror(errno)))")
        }
        var err = try body(fd)
        if err == 0 && fsync(fd) != 0 { err = errno }
        close(fd)
        if err != 0 {
            unlink(tmp)
            throw AETError.io("\(path): write failed: \(String(cString: strerror(err)))")
        }
        if let prefix = crashAfterTemp, !prefix.isEmpty, path.hasPrefix(prefix) {
            _exit(99)
        }
        if rename(tmp, path) != 0 {
            let e = errno
            unlink(tmp)
            throw AETError.io("\(path): rename failed: \(String(cString: strerror(e)))")
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
