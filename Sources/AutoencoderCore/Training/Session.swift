import Foundation

/// Process-level plumbing shared by every subcommand: the communicator, thread policy, signals,
/// and turning errors into one line and an exit code on every rank.
public enum Session {
    /// Runs `body` with the right communicator and never returns. Rank 0 alone prints progress;
    /// other ranks print only errors, prefixed `rank N:`.
    public static func run(collectiveTimeout: Double = 300, _ body: (Communicator) throws -> Void) -> Never {
        Signals.install()  // before MPI start-up, so an early SIGTERM is not fatal
        signal(SIGPIPE, SIG_IGN)
        let comm: Communicator
        if MPICommunicator.launchedByMPI() {
            let m = MPICommunicator()
            m.startWatchdog(timeout: collectiveTimeout)
            comm = m
        } else {
            comm = LocalCommunicator()
        }
        Threads.configure(worldSize: comm.size)
        do {
            try body(comm)
            comm.finalize()
            exit(0)
        } catch let e as AETError {
            printError((comm.rank == 0 ? "" : "rank \(comm.rank): ") + "error: " + e.message)
            if e.allRanks || comm.size == 1 {
                comm.finalize()
                exit(e.exitCode)
            }
            comm.abort(code: e.exitCode)
        } catch {
            printError((comm.rank == 0 ? "" : "rank \(comm.rank): ") + "error: \(error)")
            comm.abort(code: ExitCode.failure)
        }
    }

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

    /// The full `aetrain train` flow. Returns the summary (also written to OUT/summary.json).
    @discardableResult
    public static func train(_ config: TrainConfig, comm: Communicator,
                             afterRun: ((Trainer, inout RunSummary) throws -> Void)? = nil) throws -> RunSummary {
        try checkBeforeStart(config, comm: comm)
        let (train, test) = try loadData(config, comm: comm)
        let trainer = try Trainer(config: config, comm: comm, train: train, test: test)
        trainer.checkpoints = Checkpointer(config: config)
        let resumedStep = try resumeOrInitialize(trainer)
        try comm.agree(comm.isRoot ? catching { try trainer.openMetrics(resumedAt: resumedStep) } : nil, what: "opening metrics.jsonl")
        let pca = PCABaseline(train: train, test: test, components: trainer.model.latent)
        if config.reportEveryEpoch && config.report && comm.isRoot { reportAfterEachEpoch(trainer, pca: pca) }
        if comm.isRoot {
            printError("aetrain \(aetrainVersion): \(config.model.name) (\(trainer.model.parameterCount) parameters) on \(config.dataset.rawValue), \(comm.size) rank(s), global batch \(config.batchSize), \(trainer.batchesPerEpoch) steps per epoch, BLAS threads \(Threads.blasThreads)")
        }
        var summary = try trainer.run()
        summary.resumedFromStep = resumedStep
        summary.checkpoint = trainer.checkpoints?.lastPath
        try afterRun?(trainer, &summary)
        if comm.isRoot && config.report { writeReport(trainer, pca: pca, summary: &summary) }
        try finish(summary, config: config, comm: comm)
        return summary
    }

    /// Every rank has the same config, the launch matches the scheduler, the config is valid and
    /// OUT is a writable directory; any failure stops every rank.
    static func checkBeforeStart(_ config: TrainConfig, comm: Communicator) throws {
        try checkSameConfig(config, comm: comm)
        try launchCheck(comm: comm)
        try comm.agree(catching { try config.validate(worldSize: comm.size) }, what: "config validation")
        try comm.agree(comm.isRoot ? catching { try prepareOut(config.out) } : nil, what: "output directory check")
    }

    /// The training and test splits (every rank holds the UInt8 images once).
    static func loadData(_ config: TrainConfig, comm: Communicator) throws -> (Dataset, Dataset) {
        let data: (Dataset, Dataset)? = try comm.collectively("data loading") {
            var train = try IDX.load(dir: config.dataDir, split: .train, limit: config.trainLimit, name: config.dataset.rawValue)
            var test = try IDX.load(dir: config.dataDir, split: .test, limit: config.testLimit, name: config.dataset.rawValue)
            if let c = config.normalClass {
                train = train.filtered { Int($0) == c }
                test = test  // anomaly scoring uses every test class
            }
            return (train, test)
        }
        return data!
    }

    /// --resume: rank 0 reads and validates the checkpoint and broadcasts it; otherwise (or when
    /// `auto` finds none) fresh parameters. Returns the step resumed from.
    static func resumeOrInitialize(_ trainer: Trainer) throws -> Int? {
        let config = trainer.config, comm = trainer.comm
        guard let r = config.resume else {
            trainer.initializeParameters()
            return nil
        }
        let loaded: Checkpoint.Loaded?? = try comm.collectively("resume") {
            guard comm.isRoot else { return nil }
            let c: Checkpoint.Loaded?
            if r == "auto" {
                c = Checkpointer.findLatestValid(out: config.out, report: printError)
                if c == nil { printError("resume auto: no valid checkpoint in \(config.out)/checkpoints; starting fresh") }
            } else {
                c = try Checkpoint.read(r)
            }
            if let c {
                try compatible(c, with: config)
                try Checkpoint.restore(c, into: trainer.model, adam: trainer.adam)
                trainer.position = c.position
                printError("resuming from \(c.file.path) at step \(c.position.step) (epoch \(c.position.epoch + 1), batch \(c.position.batchInEpoch))")
            }
            return c
        }
        var flag = [((loaded ?? nil) != nil) ? 1.0 : 0.0]
        comm.broadcastDoubles(&flag, root: 0, what: "resume broadcast")
        guard flag[0] == 1 else {
            trainer.initializeParameters()
            return nil
        }
        trainer.broadcastState()
        return trainer.position.step
    }

    /// The PCA baseline of the report, computed once when first asked for.
    final class PCABaseline {
        let train: Dataset, test: Dataset, components: Int
        private var cached: Double?
        init(train: Dataset, test: Dataset, components: Int) {
            self.train = train
            self.test = test
            self.components = components
        }
        func testMSE() throws -> Double {
            if let c = cached { return c }
            let v = try RunReport.pcaBaseline(train: train, test: test, components: components)
            cached = v
            return v
        }
    }

    /// --report-every-epoch: rank 0 rewrites the report after each epoch; the others wait at the
    /// next all-reduce.
    static func reportAfterEachEpoch(_ trainer: Trainer, pca: PCABaseline) {
        let config = trainer.config
        trainer.onEpochEnd = { t in
            let last = RunReport.curves(out: config.out).1.last
            var partial = RunSummary(model: config.model.name)
            partial.epochsCompleted = t.position.epoch
            partial.steps = t.position.step
            partial.testMSE = last?.mse ?? Double.nan
            if let err = catching({ try RunReport.write(trainer: t, summary: partial, pcaTestMSE: try pca.testMSE()) }) {
                printError("warning: epoch report not written: \(err.message)")
            }
        }
    }

    /// Rank 0, after training: the PCA baseline and OUT/report/ (a failure only warns).
    static func writeReport(_ trainer: Trainer, pca: PCABaseline, summary: inout RunSummary) {
        let config = trainer.config
        let err = catching {
            let t0 = now()
            let mse = try pca.testMSE()
            summary.pcaTestMSE = mse
            summary.pcaComponents = min(trainer.model.latent, pca.train.dim)
            try RunReport.write(trainer: trainer, summary: summary, pcaTestMSE: mse)
            summary.report = config.out + "/report/report.html"
            summary.reportSeconds = now() - t0
        }
        if let err { printError("warning: report not written: \(err.message)") }
    }

    /// Rank 0 writes summary.json (a failure stops every rank) and the closing line.
    static func finish(_ summary: RunSummary, config: TrainConfig, comm: Communicator) throws {
        guard comm.isRoot else { return try comm.agree(nil, what: "writing summary.json") }
        try comm.agree(catching { try summary.write(out: config.out) }, what: "writing summary.json")
        printError(String(format: "done: %d steps, test MSE %.6f, test BCE %.6f, %.0f samples/s; outputs in %@",
                          summary.steps ?? 0, summary.testMSE ?? .nan, summary.testBCE ?? .nan, summary.samplesPerSecond ?? 0, config.out))
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
        if c.config.batchSize != config.batchSize || c.config.seed != config.seed || c.config.trainLimit != config.trainLimit {
            printError("warning: resuming with a different --batch-size, --seed or --train-limit; the data order will not continue the original run")
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

    /// Runs `body` and returns its error as a value (for `Communicator.agree`).
    public static func catching(_ body: () throws -> Void) -> AETError? {
        do { try body(); return nil } catch let e as AETError { return e } catch { return AETError("\(error)") }
    }
}
