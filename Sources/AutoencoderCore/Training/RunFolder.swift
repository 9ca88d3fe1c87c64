import Foundation

/// The run folder (`--out`) as rank 0 takes it over before anything is written into it:
///
/// 1. created if missing, and checked to be a writable directory;
/// 2. locked: `flock` on `OUT/.aetrain.lock`, which then names the holder's PID and host. A second
///    run into the same folder stops at once (exit 4) naming them; the lock dies with its process,
///    so a lock file left by a dead one is simply taken over;
/// 3. temp files of dead writers (`.NAME.tmp-PID` from `AtomicFile`, the write probe) in OUT,
///    OUT/checkpoints and OUT/report are removed: only when that PID is not alive on this host;
/// 4. a fresh training run (no `--resume`) into a folder that holds checkpoints stops (exit 2):
///    they belong to another run, and `--resume auto` would later pick the highest step, theirs or
///    this run's. `--overwrite` moves them aside (to `OUT/checkpoints-replaced-DATE`) and starts.
public enum RunFolder {
    public static let lockName = ".aetrain.lock"

    /// Steps 1–4 for a training run (train, anomaly).
    public static func prepare(_ config: TrainConfig) throws {
        try prepare(out: config.out)
        if config.resume == nil { try checkNoForeignCheckpoints(out: config.out, overwrite: config.overwrite == true) }
    }

    /// Steps 1–3: for every command that writes into --out.
    public static func prepare(out: String) throws {
        try TrainingRun.prepareOut(out)
        try lock(out)
        let removed = removeStaleTemps(out)
        if !removed.isEmpty {
            let shown = removed.prefix(3).joined(separator: ", ") + (removed.count > 3 ? ", …" : "")
            printError("note: removed \(removed.count) temp file(s) of writers that are no longer running: \(shown)")
        }
    }

    // MARK: the lock

    /// Open descriptors of the locks this process holds, by resolved folder (held until exit).
    nonisolated(unsafe) static var held: [String: Int32] = [:]

    /// Takes `OUT/.aetrain.lock` for this process (idempotent). Fails with exit 4 naming the
    /// holder when another live process has it.
    public static func lock(_ out: String) throws {
        let key = (out as NSString).resolvingSymlinksInPath
        if held[key] != nil { return }
        let path = (out as NSString).appendingPathComponent(lockName)
        // O_NOFOLLOW and O_NONBLOCK: a symlink or FIFO planted there is an error, never followed or waited on.
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o644)
        if fd < 0 { throw AETError.io("\(path): cannot open the run folder's lock file: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw AETError.io("\(path): is \(InputFile.kind(st.st_mode)), not a regular file; cannot lock the run folder")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            if e == ENOSYS || e == EOPNOTSUPP || e == ENOLCK {
                // A file system without flock (Lustre mounted without -o flock): run unlocked, say so.
                printError("warning: \(path): the file system cannot lock (\(String(cString: strerror(e)))); a second run into \(out) would not be stopped")
                held[key] = fd
                return
            }
            let holder = e == EWOULDBLOCK ? describeHolder(fd) : nil
            close(fd)
            guard let holder else { throw AETError.io("\(path): cannot lock the run folder: \(String(cString: strerror(e)))") }
            throw AETError.io("--out \(out): in use by another aetrain run (\(holder), holding \(path)); wait for it to end, or use another --out")
        }
        let text = "pid \(getpid()) host \(hostName())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        held[key] = fd
    }

    /// "PID 123 on host node07" from the holder's lock file, checked against the process table
    /// when the holder is on this host.
    static func describeHolder(_ fd: Int32) -> String {
        // The holder writes its line right after locking: give it a moment if the file is empty.
        var text = ""
        for _ in 0..<20 {
            var buf = [UInt8](repeating: 0, count: 256)
            let n = pread(fd, &buf, buf.count, 0)
            text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
            if text.hasSuffix("\n") { break }
            usleep(10_000)
        }
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        guard f.count >= 4, f[0] == "pid", let pid = Int32(f[1]), f[2] == "host" else {
            return "a process that did not write its PID and host"
        }
        let host = f[3]
        if host == hostName() && kill(pid, 0) != 0 && errno == ESRCH {
            return "a process holds the lock; the file names PID \(pid) on host \(host), which is not running"
        }
        return "PID \(pid) on host \(host)"
    }

    static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "unknown" }
        return String(cString: buf)
    }

    // MARK: stale temp files

    /// The PID in a temp file name this package writes: `.NAME.tmp-PID` (AtomicFile) or
    /// `.aetrain-write-test-PID` (the write probe); nil for any other name.
    static func tempWriter(_ name: String) -> pid_t? {
        guard name.hasPrefix(".") else { return nil }
        let digits: Substring
        if let r = name.range(of: ".tmp-", options: .backwards), r.lowerBound > name.index(after: name.startIndex) {
            digits = name[r.upperBound...]
        } else if name.hasPrefix(".aetrain-write-test-") {
            digits = name.dropFirst(".aetrain-write-test-".count)
        } else {
            return nil
        }
        guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return pid_t(digits)
    }

    /// Removes the temp files in OUT, OUT/checkpoints and OUT/report whose writer is dead: its PID
    /// is not alive on this host (or is this process's own: it has written nothing yet). Only
    /// regular files. Returns their paths.
    public static func removeStaleTemps(_ out: String) -> [String] {
        var removed: [String] = []
        for sub in ["", Checkpoint.directoryName, "report"] {
            let dir = sub.isEmpty ? out : (out as NSString).appendingPathComponent(sub)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                guard let pid = tempWriter(name), pid > 0 else { continue }
                let alive = pid != getpid() && (kill(pid, 0) == 0 || errno != ESRCH)
                let path = (dir as NSString).appendingPathComponent(name)
                var st = stat()
                guard !alive, lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
                if unlink(path) == 0 { removed.append(path) }
            }
        }
        return removed
    }

    // MARK: foreign checkpoints

    /// A fresh run into a folder with checkpoints: a usage error, or with `--overwrite` they are
    /// moved aside (never deleted).
    static func checkNoForeignCheckpoints(out: String, overwrite: Bool) throws {
        let dir = (out as NSString).appendingPathComponent(Checkpoint.directoryName)
        // Step checkpoints, newest first, then an earlier run's --keep-best file (a new run with
        // --keep-best would write over it).
        var existing = Checkpoint.list(out: out)
        let best = (dir as NSString).appendingPathComponent(ModelSelector.bestFileName)
        var st = stat()
        if lstat(best, &st) == 0 { existing.append(best) }
        guard let newest = existing.first else { return }
        guard overwrite else {
            throw AETError.usage("--out \(out): holds \(existing.count) checkpoint(s) of an earlier run (newest \((newest as NSString).lastPathComponent)); pass --resume auto to continue it, --overwrite to start a new run there (its checkpoints are moved aside, not deleted), or another --out")
        }
        let stamp = DateFormatter()
        stamp.dateFormat = "yyyyMMdd-HHmmss"
        stamp.locale = Locale(identifier: "en_US_POSIX")
        let base = (out as NSString).appendingPathComponent("checkpoints-replaced-" + stamp.string(from: Date()))
        var target = base
        var k = 2
        while lstat(target, &st) == 0 {
            target = base + "-\(k)"
            k += 1
        }
        if rename(dir, target) != 0 {
            throw AETError.io("--overwrite: cannot move \(dir) to \(target): \(String(cString: strerror(errno)))")
        }
        printError("note: --overwrite: moved the earlier run's \(existing.count) checkpoint(s) to \(target) (delete it when no longer needed)")
    }
}
