import Foundation

/// The checks before a training run starts: the same config on every rank, a launch that
/// matches the scheduler, a resume that fits the run, a writable --out.
extension TrainingRun {
    /// Checks that every rank resolved the same configuration as rank 0, and names what differs.
    public static func checkSameConfig(_ config: TrainConfig, comm: Communicator) throws {
        guard comm.size > 1 else { return }
        let mine = Array(config.json().utf8)
        var root = mine
        comm.broadcast(&root, root: 0, what: "config check")
        var err: AETError? = nil
        if root != mine {
            let here = flatten(JSON.parseObject(String(decoding: mine, as: UTF8.self)) ?? [:])
            let there = flatten(JSON.parseObject(String(decoding: root, as: UTF8.self)) ?? [:])
            let keys = Set(here.keys).union(there.keys).filter { here[$0] != there[$0] }.sorted()
            let detail = keys.prefix(4).map { "\($0) is \(here[$0] ?? "unset") here, \(there[$0] ?? "unset") on rank 0" }
                .joined(separator: "; ")
            err = AETError("configuration differs from rank 0's: \(detail); every rank must get the same flags",
                           exitCode: ExitCode.distributed)
        }
        try comm.agree(err, what: "config check")
    }

    /// Checks that every rank read the same data as rank 0: the SHA-256 of each of the four files'
    /// whole decompressed content (computed while reading them, so this costs three small
    /// collectives) and the split sizes. A copy that differs on any rank (one pixel, another count)
    /// stops every rank at once with the same line naming the rank and the file (exit 6).
    public static func checkSameData(train: Dataset, test: Dataset, comm: Communicator) throws {
        guard comm.size > 1 else { return }
        // Per split: images SHA-256, labels SHA-256, count; then the paths (for the message only).
        func facts(_ d: Dataset) -> [String] {
            [d.source?.imagesSHA256 ?? "", d.source?.labelsSHA256 ?? "", String(d.count)]
        }
        func paths(_ d: Dataset) -> [String] { [d.source?.imagesPath ?? "images", d.source?.labelsPath ?? "labels"] }
        let mine = facts(train) + facts(test), myPaths = paths(train) + paths(test)
        func decode(_ b: [UInt8]) -> [String] { String(decoding: b, as: UTF8.self).split(separator: "\0", omittingEmptySubsequences: false).map(String.init) }
        var root = Array(mine.joined(separator: "\0").utf8)
        comm.broadcast(&root, root: 0, what: "data check")
        let rootFacts = decode(root)
        var v: [Double] = rootFacts != mine ? [1, Double(comm.size - comm.rank)] : [0, 0]
        comm.allreduceMax(&v, count: 2, what: "data check")
        guard v[0] == 1 else { return }
        // The lowest rank that differs sends its facts and paths, so that every rank prints the same line.
        let bad = comm.size - Int(v[1])
        var theirs = Array((mine + myPaths).joined(separator: "\0").utf8)
        comm.broadcast(&theirs, root: bad, what: "data check")
        let other = decode(theirs)
        guard other.count == 10, rootFacts.count == 6 else {
            throw AETError("rank \(bad) read other data than rank 0; every rank must read identical copies of the data files",
                           exitCode: ExitCode.distributed, allRanks: true)
        }
        var what: [String] = []
        for (i, p, name) in [(0, 6, "training images"), (1, 7, "training labels"), (3, 8, "test images"), (4, 9, "test labels")]
        where other[i] != rootFacts[i] {
            what.append("\(other[p]) (\(name)) has SHA-256 \(other[i].prefix(12))… of its content there, \(rootFacts[i].prefix(12))… on rank 0")
        }
        for (i, split) in [(2, "training"), (5, "test")] where other[i] != rootFacts[i] {
            what.append("\(other[i]) \(split) images there, \(rootFacts[i]) on rank 0")
        }
        throw AETError("rank \(bad) read other data than rank 0: \(what.joined(separator: "; ")); every rank must read identical copies of the data files",
                       exitCode: ExitCode.distributed, allRanks: true)
    }

    /// Nested JSON object → ["adam.lr": "0.001", …], for naming differences.
    static func flatten(_ obj: [String: Any], prefix: String = "") -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in obj {
            if let d = v as? [String: Any] {
                out.merge(flatten(d, prefix: prefix + k + "."), uniquingKeysWith: { a, _ in a })
            } else if let a = v as? [Any], let data = try? JSONSerialization.data(withJSONObject: a, options: [.sortedKeys]) {
                out[prefix + k] = String(decoding: data, as: UTF8.self)
            } else {
                out[prefix + k] = "\(v)"
            }
        }
        return out
    }

    /// Warns (or, under --strict launch checks, fails) when the MPI world size disagrees with the
    /// scheduler's task count: the classic "N single-rank jobs instead of one N-rank job".
    public static func launchCheck(comm: Communicator, env: [String: String] = ProcessInfo.processInfo.environment) throws {
        var expected: (String, Int)? = nil
        if let s = env["SLURM_NTASKS"].flatMap(Int.init) { expected = ("SLURM_NTASKS", s) }
        else if let s = env["PBS_NP"].flatMap(Int.init) { expected = ("PBS_NP", s) }
        guard let (name, n) = expected, n != comm.size else { return }
        let msg = "MPI world size is \(comm.size) but \(name)=\(n): the ranks did not join one job (start with srun --mpi=pmix or mpirun inside the allocation, not N separate processes), or the task count is wrong"
        throw AETError(msg, exitCode: ExitCode.distributed, allRanks: true)
    }

    /// A resume may change epochs, learning rate and the like, but not what the tensors mean.
    static func compatible(_ c: Checkpoint.Loaded, with config: TrainConfig) throws {
        let path = c.file.path
        if c.config.model != config.model {
            throw AETError.data("\(path): checkpoint is for model \(c.config.model.name), this run is \(config.model.name) (incompatible; use another --out or drop --resume)")
        }
        if c.config.dataset != config.dataset {
            throw AETError.data("\(path): checkpoint was trained on \(c.config.dataset.rawValue), this run uses \(config.dataset.rawValue)")
        }
        // Another --batch-size continues the same sample order (the position is re-mapped onto the
        // new batches and a line says so); another seed, training set or validation split is another order.
        if c.config.seed != config.seed || c.config.trainLimit != config.trainLimit
            || c.config.selection?.valSplit != config.selection?.valSplit {
            printError("warning: resuming with a different --seed, --train-limit or --val-split; the data order will not continue the original run")
        }
    }

    /// Creates OUT and checks that it is a writable directory.
    public static func prepareOut(_ out: String) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: out, isDirectory: &isDir) {
            guard isDir.boolValue else { throw AETError.io("--out \(out): exists and is not a directory") }
        } else {
            // mkdir -p with POSIX errors, so the message says why.
            var path = out.hasPrefix("/") ? "" : "."
            for part in out.split(separator: "/") {
                path += "/" + part
                if mkdir(path, 0o755) != 0 && errno != EEXIST {
                    throw AETError.io("--out \(out): cannot create directory \(path): \(String(cString: strerror(errno)))")
                }
            }
            guard fm.fileExists(atPath: out, isDirectory: &isDir), isDir.boolValue else {
                throw AETError.io("--out \(out): cannot create directory: a path component is not a directory")
            }
        }
        let probe = (out as NSString).appendingPathComponent(".aetrain-write-test-\(getpid())")
        let fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if fd < 0 { throw AETError.io("--out \(out): not writable: \(String(cString: strerror(errno)))") }
        close(fd)
        unlink(probe)
    }
}
