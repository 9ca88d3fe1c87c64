import Foundation

/// The `aetrain train` flow (also under `anomaly`), in the order it runs: start-up checks, data,
/// model and exchange, resume or fresh parameters, training, what comes after (application
/// scoring, report), summary.json.
public enum TrainingRun {
    /// The full `aetrain train` flow. Returns the summary (also written to OUT/summary.json).
    @discardableResult
    public static func train(_ config: TrainConfig, comm: Communicator,
                             afterRun: ((Trainer, inout RunSummary) throws -> Void)? = nil) throws -> RunSummary {
        try checkBeforeStart(config, comm: comm)
        try comm.agree(comm.isRoot ? catching { try RunConfigFile.write(config) } : nil, what: "writing config.json")
        let topology = NodeTopology.make(comm: comm)
        let (train, test, validation) = try loadData(config, comm: comm, topology: topology)
        try checkSameData(train: train, test: test, comm: comm)
        let trainer = try Trainer(config: config, comm: comm, train: train, test: test, validation: validation, topology: topology)
        trainer.checkpoints = Checkpointer(config: config)
        let resumedStep = try resumeOrInitialize(trainer)
        try comm.waitingForRoot {
            try comm.agree(comm.isRoot ? catching { try trainer.openMetrics(resumedAt: resumedStep) } : nil, what: "opening metrics.jsonl")
        }
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
        try comm.waitingForRoot {
            try comm.agree(comm.isRoot ? catching { try RunFolder.prepare(config) } : nil, what: "output directory check")
        }
    }

    /// The training and test splits (held once per node when ranks share one: `NodeSharedData`),
    /// and with --val-split the validation images: the last fraction of the training set, the
    /// same on every rank and for every seed, which training then never sees.
    static func loadData(_ config: TrainConfig, comm: Communicator, topology: NodeTopology?) throws -> (Dataset, Dataset, Dataset?) {
        let (train, test) = try NodeSharedData.load(name: config.dataset.rawValue, comm: comm, topology: topology) { try decodeData(config) }
        guard let f = config.selection?.valSplit else { return (train, test, nil) }
        let k = try comm.collectively("validation split") { try ModelSelection.validationCount(f, of: train.count) }!
        return (train.slice(0, train.count - k), test, train.slice(train.count - k, train.count))
    }

    /// Reads and decodes both splits (--train-limit, --test-limit, --normal-class): every rank on
    /// its own, or one rank per node (`NodeSharedData`, which calls this).
    static func decodeData(_ config: TrainConfig) throws -> (Dataset, Dataset) {
        var train = try IDX.load(dir: config.dataDir, split: .train, limit: config.trainLimit, name: config.dataset.rawValue)
        let test = try IDX.load(dir: config.dataDir, split: .test, limit: config.testLimit, name: config.dataset.rawValue)
        if let c = config.normalClass {
            train = train.filtered { Int($0) == c }  // the test split keeps every class: anomaly scoring uses them
        }
        return (train, test)
    }

    /// --resume: rank 0 reads and validates the checkpoint and broadcasts it; otherwise (or when
    /// `auto` finds none) fresh parameters. Returns the step resumed from.
    static func resumeOrInitialize(_ trainer: Trainer) throws -> Int? {
        let config = trainer.config, comm = trainer.comm
        guard let r = config.resume else {
            trainer.initializeParameters()
            return nil
        }
        // The other ranks wait while rank 0 reads and checks the file (untimed by the watchdog).
        let loaded: Checkpoint.Loaded?? = try comm.waitingForRoot { try comm.collectively("resume") {
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
                trainer.checkpoints?.adopt(c)
                trainer.selector?.restore(c.metadata.monitorState)
                printError("resuming from \(c.file.path) at step \(c.position.step) (epoch \(c.position.epoch + 1), batch \(c.position.batchInEpoch))")
                let (position, note) = trainer.mapOntoEpoch(c.position, checkpointBatchSize: c.config.batchSize)
                trainer.position = position
                if let note { printError(note) }
                if position.batchInEpoch > 0, let sum = c.metadata.epochLossSum, let count = c.metadata.epochLossCount {
                    trainer.log.epochLoss = (sum, count)
                }
            }
            return c
        } }
        var flag = [((loaded ?? nil) != nil) ? 1.0 : 0.0]
        comm.broadcastDoubles(&flag, root: 0, what: "resume broadcast")
        guard flag[0] == 1 else {
            trainer.initializeParameters()
            return nil
        }
        trainer.broadcastState()
        trainer.selector?.share(comm: comm)
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
            summary.meanImageTestMSE = RunReport.meanImageBaseline(train: pca.train, test: pca.test)
            try RunReport.write(trainer: trainer, summary: summary, pcaTestMSE: mse)
            summary.report = config.out + "/report/report.html"
            summary.reportSeconds = now() - t0
        }
        if let err { printError("warning: report not written: \(err.message)") }
    }

    /// Rank 0 writes summary.json (a failure stops every rank) and the closing line.
    /// The other ranks wait here, untimed, while rank 0 scores, writes the report and the summary.
    static func finish(_ summary: RunSummary, config: TrainConfig, comm: Communicator) throws {
        guard comm.isRoot else { return try comm.waitingForRoot { try comm.agree(nil, what: "writing summary.json") } }
        try comm.agree(catching { try summary.write(out: config.out) }, what: "writing summary.json")
        printError(String(format: "done: %d steps, test MSE %.6f, test BCE %.6f, %.0f samples/s; outputs in %@",
                          summary.steps ?? 0, summary.testMSE ?? .nan, summary.testBCE ?? .nan, summary.samplesPerSecond ?? 0, config.out))
    }
}
