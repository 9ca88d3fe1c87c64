import Foundation

/// Crash-safe file writes: temp file in the same directory → write → fsync → rename → fsync(dir).
/// A crash at any instant leaves either the old file or the new one, never a torn file.
///
/// The rename happens only onto a regular file or a new path; a special file is never replaced:
/// - a symbolic link is followed and its target is written (atomically, if it is a regular file
///   or does not exist yet); the link itself stays;
/// - a character device or FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written in place
///   when the caller allows it (`.writeInPlace`: the commands' `--output`), else refused; a FIFO
///   without a reader is an error, not a hang;
/// - a path that leads into /proc (`/dev/stdout`, `/dev/fd/N`) is the same open file the process
///   already has (a pipe, a terminal, or a file the shell opened): written in place when allowed;
/// - a directory, block device or socket is refused.
/// Refusals are AETError.io (exit 4) naming the path.
public enum AtomicFile {
    /// What a write does when the destination is a character device, a FIFO or a /proc link.
    public enum Special: Sendable { case refuse, writeInPlace }

    /// Test hook: when set to a path prefix, a write whose destination starts with it stops
    /// (the process exits with code 99) right after the temp file is written and synced,
    /// simulating a crash before the rename. Read from the environment variable
    /// AETRAIN_TEST_CRASH_AFTER_TEMP.
    static let crashAfterTemp: String? = FaultInjection.current.crashAfterTemp

    public static func write(_ data: Data, to url: URL, special: Special = .refuse) throws {
        try data.withUnsafeBytes { raw in
            try write(bytes: raw, to: url, special: special)
        }
    }

    public static func write(bytes: UnsafeRawBufferPointer, to url: URL, special: Special = .refuse) throws {
        try write(to: url, special: special) { fd in
            writeAll(fd, bytes)
        }
    }

    /// Writes all of `bytes` to `fd`; returns 0 or an errno.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
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

    /// Where a write to a path goes.
    enum Destination: Equatable {
        /// A regular file or a new path: temp + rename onto this path (a symlink's final target).
        case replace(String)
        /// A character device, FIFO or /proc link: opened and written as it is.
        case inPlace(String)
    }

    /// True when a write to `path` would go in place (not through a rename): the path is, or
    /// links to, a character device, a FIFO or an open file under /proc.
    public static func isSpecial(_ path: String) -> Bool {
        if case .inPlace? = try? destination(path, special: .writeInPlace) { return true }
        return false
    }

    static func destination(_ path: String, special: Special) throws -> Destination {
        func refuse(_ what: String) -> AETError {
            AETError.io("\(path): is \(what), not a regular file; refusing to replace it (outputs are written only to regular files or new paths)")
        }
        var p = path
        for _ in 0 ..< 40 {
            var st = stat()
            if lstat(p, &st) != 0 {
                let e = errno
                if e == ENOENT { return .replace(p) }  // a new file, or the missing target of a link
                throw AETError.io("\(path): cannot write: \(String(cString: strerror(e)))")
            }
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                return .replace(p)
            case S_IFLNK:
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(p, &buf, buf.count - 1)
                guard n >= 0 else { throw AETError.io("\(path): cannot read the link: \(String(cString: strerror(errno)))") }
                let target = String(decoding: buf[0 ..< n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let next = target.hasPrefix("/") ? target : ((p as NSString).deletingLastPathComponent as NSString).appendingPathComponent(target)
                if next.hasPrefix("/proc/") {
                    // /dev/stdout → /proc/self/fd/1: a file this process already has open. Replacing
                    // what it points to would lose the output; write through it instead.
                    guard special == .writeInPlace else { throw refuse("a link to an open file in /proc (\(next))") }
                    var t = stat()
                    guard stat(p, &t) == 0 else { throw AETError.io("\(path): cannot write: \(String(cString: strerror(errno)))") }
                    switch t.st_mode & S_IFMT {
                    case S_IFREG, S_IFCHR, S_IFIFO: return .inPlace(path)
                    default: throw refuse(InputFile.kind(t.st_mode))
                    }
                }
                p = next
            case S_IFCHR, S_IFIFO:
                guard special == .writeInPlace else { throw refuse(InputFile.kind(st.st_mode)) }
                return .inPlace(p)
            default:
                throw refuse(InputFile.kind(st.st_mode))
            }
        }
        throw AETError.io("\(path): too many levels of symbolic links")
    }

    /// Writes through a callback that gets the file's descriptor and returns 0 or an errno.
    public static func write(to url: URL, special: Special = .refuse, body: (Int32) throws -> Int32) throws {
        let shown = url.path
        switch try destination(shown, special: special) {
        case .inPlace(let p):
            try writeInPlace(p, shown: shown, body: body)
        case .replace(let p):
            try replace(p, shown: shown, body: body)
        }
    }

    static func writeInPlace(_ path: String, shown: String, body: (Int32) throws -> Int32) throws {
        // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking. No O_CREAT, no
        // O_TRUNC: the file is not ours to create or cut.
        let fd = open(path, O_WRONLY | O_APPEND | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENXIO { throw AETError.io("\(shown): a FIFO with no reader; start the reader first") }
            throw AETError.io("\(shown): cannot open for writing: \(String(cString: strerror(e)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, [S_IFREG, S_IFCHR, S_IFIFO].contains(st.st_mode & S_IFMT) else {
            throw AETError.io("\(shown): changed while being opened; not written")
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        let err = try body(fd)
        if err != 0 { throw AETError.io("\(shown): write failed: \(String(cString: strerror(err)))") }
        if st.st_mode & S_IFMT == S_IFREG { fsync(fd) }
    }

    static func replace(_ path: String, shown: String, body: (Int32) throws -> Int32) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        unlink(tmp)  // a leftover of this PID's own earlier write; O_EXCL never opens what is there
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            throw AETError.io("\(shown): cannot create temp file: \(String(cString: strerror(errno)))")
        }
        var err = try body(fd)
        if err == 0 && fsync(fd) != 0 { err = errno }
        close(fd)
        if err != 0 {
            unlink(tmp)
            throw AETError.io("\(shown): write failed: \(String(cString: strerror(err)))")
        }
        if let prefix = crashAfterTemp, !prefix.isEmpty, shown.hasPrefix(prefix) {
            _exit(99)
        }
        if rename(tmp, path) != 0 {
            let e = errno
            unlink(tmp)
            throw AETError.io("\(shown): rename failed: \(String(cString: strerror(e)))")
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
