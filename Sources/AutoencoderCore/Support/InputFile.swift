import Foundation

/// Opening input files safely: only regular files (or symlinks to them) are read. The open uses
/// O_NONBLOCK, so a FIFO without a writer cannot block it, and fstat on the descriptor (not on the
/// name) decides; a directory, FIFO, socket or device is a one-line error naming the file (exit 3).
public enum InputFile {
    /// What a file type is called in an error message.
    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "not a regular file"
        }
    }

    /// Opens `path` for reading if it is a regular file; returns the descriptor (blocking mode,
    /// close-on-exec) and its size. `what` names the expected content in messages ("a checkpoint").
    public static func open(_ path: String, what: String = "a regular file") throws -> (fd: Int32, size: Int) {
        guard !path.isEmpty else { throw AETError.data("empty path given where \(what) was expected") }
        let fd = Foundation.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        if fd < 0 {
            let e = errno
            if e == ENOENT { throw AETError.data("\(path): file not found") }
            throw AETError.data("\(path): cannot open: \(String(cString: strerror(e)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            Foundation.close(fd)
            throw AETError.data("\(path): cannot stat: \(String(cString: strerror(e)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            Foundation.close(fd)
            throw AETError.data("\(path): is \(kind(st.st_mode)), not a regular file (expected \(what))")
        }
        // Regular files never block; clear O_NONBLOCK so reads behave as usual.
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return (fd, Int(st.st_size))
    }

    /// Checks that `path` names a regular file (opening and closing it).
    public static func check(_ path: String, what: String = "a regular file") throws {
        let (fd, _) = try open(path, what: what)
        Foundation.close(fd)
    }

    /// Reads a whole regular file. Files larger than `maxBytes` (default: what this machine's
    /// memory can hold) are refused before anything is allocated.
    public static func readAll(_ path: String, what: String = "a regular file", maxBytes: Int? = nil) throws -> Data {
        let (fd, size) = try open(path, what: what)
        defer { Foundation.close(fd) }
        let limit = maxBytes ?? Memory.available
        guard size <= limit else {
            throw AETError.data("\(path): \(Memory.format(Double(size))), more than the \(Memory.format(Double(limit))) of memory available to read it")
        }
        var data = Data(count: size)
        var done = 0
        try data.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            while done < size {
                let n = Foundation.read(fd, raw.baseAddress! + done, min(size - done, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw AETError.data("\(path): read error: \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                done += n
            }
        }
        // The file shrank while being read: what we have is not the file.
        guard done == size else { throw AETError.data("\(path): changed while being read (\(done) of \(size) bytes)") }
        return data
    }
}

/// Memory this process may use: physical memory, or a smaller cgroup limit (Slurm, containers).
public enum Memory {
    public static let available: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        var bytes = pages > 0 && pageSize > 0 ? pages * pageSize : Int.max
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let s = try? String(contentsOfFile: path, encoding: .utf8),
               let v = Int(s.trimmingCharacters(in: .whitespacesAndNewlines)), v > 0 {
                bytes = min(bytes, v)
            }
        }
        return bytes
    }()

    /// "1.2 GB", "310 MB", "4.0 KB" (decimal units).
    public static func format(_ bytes: Double) -> String {
        let units = [(1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")]
        for (scale, name) in units where bytes >= scale {
            return String(format: bytes / scale >= 100 ? "%.0f %@" : "%.1f %@", bytes / scale, name)
        }
        return String(format: "%.0f bytes", bytes)
    }
}
