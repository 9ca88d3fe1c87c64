import ArgumentParser
import AutoencoderCore
import Foundation

@main
struct AETrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aetrain",
        abstract: "Train autoencoders on MNIST and Fashion-MNIST, data-parallel over MPI.",
        discussion: "Run under mpirun for data-parallel training: mpirun -np 4 aetrain [train options]. Without mpirun it runs as a single rank.",
        version: aetrainVersion,
        subcommands: [Train.self, Eval.self, Encode.self, Reconstruct.self, Info.self, Fetch.self, Models.self, Generate.self, PCACommand.self, Anomaly.self, Denoise.self, Compare.self, Bench.self, CommSelfTest.self,
                      CommSweepCommand.self, ScaleModelCommand.self, DataSelfTest.self],
        defaultSubcommand: Train.self)

    /// Parse errors become one line on stderr and exit code 2; --help and --version print as usual.
    static func main() {
        Signals.install()  // first of all: a SIGTERM/SIGUSR1/SIGHUP right after exec must not kill a run
        do {
            var command = try parseAsRoot(try ConfigFileArguments.expand(Array(CommandLine.arguments.dropFirst())))
            // Only training stops at a step boundary; every other command gets the default actions back.
            if !(command is Train || command is Anomaly) { Signals.restoreDefaults() }
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            // Parsing happens before MPI starts: take the rank from the launcher for the prefix.
            let rank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"] ?? ProcessInfo.processInfo.environment["PMIX_RANK"]
            let prefix = rank.map { $0 == "0" ? "" : "rank \($0): " } ?? ""
            if let e = error as? AETError {
                printError(prefix + "error: " + e.message)
                Foundation.exit(e.exitCode)
            }
            let msg = message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            printError(prefix + "error: " + msg + " (see aetrain --help)")
            Foundation.exit(ExitCode.usage)
        }
    }
}

// MARK: argument types

extension DatasetName: ExpressibleByArgument {}
extension LossKind: ExpressibleByArgument {}
extension InitScheme: ExpressibleByArgument {}
extension Activation: ExpressibleByArgument {}
extension OnNaN: ExpressibleByArgument {}
extension OnCheckpointError: ExpressibleByArgument {}
extension GradientSync: ExpressibleByArgument {}
extension Split: ExpressibleByArgument {}
extension MonitorKey: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// Options shared by train and anomaly.
struct TrainOptions: ParsableArguments {
    @Option(help: "Dataset: fashion-mnist or mnist.") var dataset: DatasetName = .fashionMNIST
    @Option(help: "Folder holding the four IDX files (default: $AETRAIN_DATA_DIR/<dataset>, /usr/share/datasets/fashion-mnist, ./data/<dataset>).")
    var dataDir: String?
    @Option(help: "Model preset (see `aetrain models`), or `custom` with --encoder/--latent.") var model: String = "mlp3"
    @Option(help: "Custom MLP hidden widths, e.g. 256,64 (implies --model custom).") var encoder: String?
    @Option(parsing: .unconditional, help: "Custom MLP code size (with --encoder).") var latent: Int?
    @Option(help: "Custom MLP activation: relu, leaky-relu, tanh, sigmoid, identity.") var activation: Activation = .relu
    @Option(help: "Loss: mse, bce or l1 (default: the preset's).") var loss: LossKind?
    @Option(parsing: .unconditional, help: "Epochs.") var epochs: Int = 10
    @Option(parsing: .unconditional, help: "Stop after this many optimizer steps.") var maxSteps: Int?
    @Option(parsing: .unconditional, help: "Global batch size (split across ranks).") var batchSize: Int = 128
    @Option(parsing: .unconditional, help: "Learning rate.") var lr: Double = 1e-3
    @Option(help: "Learning rate after the warm-up: constant, cosine (PyTorch CosineAnnealingLR to 0 at the run's last step) or step:EVERY:GAMMA (StepLR).")
    var lrSchedule: String = "constant"
    @Option(parsing: .unconditional, help: "Linear learning-rate warm-up over the first N steps (step t takes lr·(t+1)/N).") var warmupSteps: Int = 0
    @Flag(help: "Linear scaling rule (Goyal et al. 2017): the learning rate is --lr × global batch / 128.") var scaleLr = false
    @Option(parsing: .unconditional, help: "Weight decay (L2 added to the gradient, as torch.optim.Adam; decoupled with --adamw).") var weightDecay: Double = 0
    @Flag(help: "AdamW: decoupled weight decay.") var adamw = false
    @Option(parsing: .unconditional, help: "Adam beta1.") var beta1: Double = 0.9
    @Option(parsing: .unconditional, help: "Adam beta2.") var beta2: Double = 0.999
    @Option(parsing: .unconditional, help: "Adam epsilon.") var eps: Double = 1e-8
    @Option(parsing: .unconditional, help: "Random seed (initialisation, data order, noise, VAE sampling).") var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Use only the first N training images.") var trainLimit: Int?
    @Option(parsing: .unconditional, help: "Use only the first N test images.") var testLimit: Int?
    @Option(help: "Output folder.") var out: String = "./aetrain-run"
    @Option(parsing: .unconditional, help: "Log every N steps to metrics.jsonl and the console.") var logEvery: Int = 50
    @Flag(help: "Round pixels to 0/1 (Keras BCE tutorial).") var binarize = false
    @Option(name: .customLong("init"), help: "Initialisation: torch or glorot (default: the preset's).") var initScheme: InitScheme?
    @Option(help: "Input noise for denoising: gaussian:STD, speckle:STD, salt-pepper:P, mask:P.") var noise: String?
    @Option(parsing: .unconditional, help: "sparse-l1 λ / sparse-kl weight.") var sparsityWeight: Float?
    @Option(parsing: .unconditional, help: "sparse-kl target activation ρ.") var sparsityTarget: Float?
    @Option(parsing: .unconditional, help: "contractive λ.") var contractiveWeight: Float?
    @Option(parsing: .unconditional, help: "VAE β on the KL term.") var beta: Float?
    @Option(parsing: .unconditional, help: "Also checkpoint every N steps (0: epoch ends only).") var checkpointEvery: Int = 0
    @Option(parsing: .unconditional, help: "Keep the newest N of this run's checkpoints (other files in OUT/checkpoints are never deleted).") var keep: Int = 3
    @Option(help: "Resume: auto (newest valid checkpoint in --out, else fresh) or a checkpoint path.") var resume: String?
    @Flag(help: "Start a new run in an --out that holds another run's checkpoints (they are moved to OUT/checkpoints-replaced-DATE).")
    var overwrite = false
    @Option(parsing: .unconditional, help: "Debug: compare a parameter checksum across ranks every N steps.") var checkSync: Int = 0
    @Option(parsing: .unconditional, help: "Gradient bucket size in MB: all-reduce buckets during backward, overlapped (0: one all-reduce after backward).")
    var bucketSize: Double = 0
    @Option(help: "Gradient exchange: shared (one node: gradients and Adam moments in MPI shared memory, each rank sums and updates its slice of the parameters in one pass), hierarchical (several nodes: shared inside each node, each slice all-reduced across nodes), allreduce (one MPI all-reduce, then the whole Adam step on every rank), or auto (with --bucket-size 0: shared on one node, hierarchical across nodes when a node has several ranks, else allreduce).")
    var gradSync: GradientSync = .auto
    @Option(parsing: .unconditional, help: "Abort the job when a collective is pending longer than SEC seconds (0 disables).") var collectiveTimeout: Double = 300
    @Option(help: "On a non-finite loss or gradient: stop or skip the step.") var onNan: OnNaN = .stop
    @Option(help: "On a failed checkpoint write: stop or continue.") var onCheckpointError: OnCheckpointError = .stop
    @Flag(help: "Do not write OUT/report/.") var noReport = false
    @Flag(help: "Rewrite OUT/report/ after every epoch.") var reportEveryEpoch = false
    @Option(help: "Read the options from a JSON or TOML file (keys: the flags in snake_case, e.g. batch_size = 256; OUT/config.json is one); flags on the command line override it.")
    var config: String?
    @Flag(help: "Keep OUT/checkpoints/best.safetensors: the model at the evaluation with the lowest --monitor value.") var keepBest = false
    @Option(help: "The value --keep-best and --early-stop minimise: test_mse, test_bce, val_mse, val_bce (need --val-split) or train_loss (default: val_mse with --val-split, else test_mse).")
    var monitor: MonitorKey?
    @Option(help: "Stop after PATIENCE evaluations without an improvement of the monitor by more than MIN_DELTA (Keras EarlyStopping), e.g. 3 or 3:0.0001.")
    var earlyStop: String?
    @Option(parsing: .unconditional, help: "Hold out the last fraction F of the training set as a validation split (not trained on; evaluated each epoch), e.g. 0.1.")
    var valSplit: Double?
    @Option(help: "Arithmetic of matrix products and convolutions: f32, or bf16 (bf16 inputs, f32 accumulation; weights, optimizer, gradient exchange and checkpoints stay f32).")
    var precision: Precision = .f32

    /// Checks needed before the communicator starts (its watchdog takes --collective-timeout).
    func preflight() throws {
        try TrainConfig.checkCollectiveTimeout(collectiveTimeout)
    }

    /// `training`: false when nothing is trained (anomaly scoring with a checkpoint), so the
    /// training set need not be read.
    func resolve(normalClass: Int? = nil, training: Bool = true) throws -> TrainConfig {
        var spec: ModelSpec
        if let enc = encoder {
            let widths = try enc.split(separator: ",", omittingEmptySubsequences: false).map { s -> Int in
                guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v > 0 else {
                    throw AETError.usage("--encoder \(enc): expected positive widths like 256,64")
                }
                return v
            }
            guard let l = latent, l > 0 else { throw AETError.usage("--encoder needs --latent N (positive)") }
            spec = ModelSpec.custom(hidden: widths, latent: l, activation: activation)
        } else if model == "custom" {
            throw AETError.usage("--model custom needs --encoder W1,W2,... and --latent N")
        } else {
            guard let p = ModelSpec.preset(model) else {
                throw AETError.usage("--model \(model): unknown model (available: \(ModelSpec.presets.map(\.name).joined(separator: ", ")))")
            }
            spec = p
            if let l = latent {
                guard l > 0 else { throw AETError.usage("--latent \(l): must be positive") }
                spec = try spec.withLatent(l)
            }
        }
        if let r = resume, r.isEmpty { throw AETError.usage("--resume: empty path (pass auto or a checkpoint file)") }
        if out.isEmpty { throw AETError.usage("--out: empty path") }
        if let d = dataDir, d.isEmpty { throw AETError.usage("--data-dir: empty path") }
        var c = TrainConfig(model: spec)
        c.dataset = dataset
        c.dataDir = try DataSource.resolve(dataset, dataDir: dataDir)
        c.objective.loss = loss ?? spec.defaultLoss
        if let v = spec.defaultPenaltyWeight {
            if spec.penalty == .contractive { c.objective.contractiveWeight = v } else { c.objective.sparsityWeight = v }
        }
        if let v = sparsityWeight { c.objective.sparsityWeight = v }
        if let v = sparsityTarget {
            guard v > 0 && v < 1 else { throw AETError.usage("--sparsity-target \(v): must be in (0, 1)") }
            c.objective.sparsityTarget = v
        }
        if let v = contractiveWeight { c.objective.contractiveWeight = v }
        if let v = beta { c.objective.beta = v }
        c.adam.lr = lr
        c.adam.weightDecay = weightDecay
        c.adam.decoupled = adamw
        c.adam.beta1 = beta1
        c.adam.beta2 = beta2
        c.adam.eps = eps
        let schedule = try LRSchedule.kind(parsing: lrSchedule)
        if schedule != .constant || warmupSteps != 0 || scaleLr {
            c.lrSchedule = LRSchedule(kind: schedule, warmupSteps: warmupSteps, scaleLR: scaleLr)
        }
        c.initScheme = initScheme ?? spec.defaultInit
        c.epochs = epochs
        c.maxSteps = maxSteps
        c.batchSize = batchSize
        c.seed = seed
        c.trainLimit = trainLimit
        c.testLimit = testLimit
        c.out = out
        c.logEvery = logEvery
        c.binarize = binarize
        if let n = noise ?? spec.defaultNoise { c.noise = try NoiseSpec(parsing: n) }
        c.checkpointEvery = checkpointEvery
        c.keep = keep
        c.resume = resume
        c.overwrite = overwrite ? true : nil
        c.checkSync = checkSync
        c.bucketSizeMB = bucketSize
        c.gradientSync = gradSync == .auto ? nil : gradSync
        c.collectiveTimeout = collectiveTimeout
        c.onNaN = onNan
        c.onCheckpointError = onCheckpointError
        c.report = !noReport
        c.reportEveryEpoch = reportEveryEpoch
        c.selection = try ModelSelection.resolve(keepBest: keepBest, monitor: monitor, earlyStop: earlyStop, valSplit: valSplit)
        c.normalClass = normalClass
        c.precision = precision == .f32 ? nil : precision
        try c.validateValues()
        if training { try clampBatchToTrainingSet(&c) }
        return c
    }

    /// A global batch larger than the training set is clamped to it: one step per epoch over the
    /// whole set, exactly what such a batch did before, without sizing buffers for the larger
    /// batch. The count comes from the IDX header (and, for anomaly, the labels of the normal
    /// class); an empty set or class is an input error here, before anything is allocated.
    func clampBatchToTrainingSet(_ c: inout TrainConfig) throws {
        let imgPath = try IDX.locate(Split.train.imageFile, in: c.dataDir)
        var n = try IDX.peekCount(imgPath)
        if n == 0 { throw IDX.emptySplitError(imgPath, .train) }
        n = min(n, c.trainLimit ?? n)
        if let k = c.normalClass {
            let lblPath = try IDX.locate(Split.train.labelFile, in: c.dataDir)
            let (_, labels) = try IDX.readLabels(lblPath, limit: c.trainLimit)
            n = labels.reduce(0) { $0 + (Int($1) == k ? 1 : 0) }
            if n == 0 {
                let lim = c.trainLimit.map { " among the first \($0) (--train-limit)" } ?? ""
                throw AETError.data("--normal-class \(k): no training images of class \(k) (\(c.dataset.classNames[k]))\(lim) in \(lblPath)")
            }
        }
        n -= try ModelSelection.validationCount(c.selection?.valSplit, of: n)
        if c.batchSize > n {
            if Launcher.rank ?? 0 == 0 {
                printError("note: --batch-size \(c.batchSize) is larger than the \(n) training images; using \(n) (one step per epoch)")
            }
            c.batchSize = n
        }
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model (the default subcommand).")
    @OptionGroup var options: TrainOptions

    func run() throws {
        let opts = options
        try opts.preflight()
        Job.run(collectiveTimeout: opts.collectiveTimeout) { comm in
            let config = try comm.collectively("reading the configuration") { try opts.resolve() }!
            try TrainingRun.train(config, comm: comm)
        }
    }
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the model presets with their parameter counts.")
    func run() throws {
        print("name          params   loss  description")
        for m in ModelSpec.presets {
            let count = (try? Autoencoder(spec: m, objective: Objective(), maxBatch: 1).parameterCount).map(String.init) ?? "n/a"
            print(m.name.padding(toLength: 12, withPad: " ", startingAt: 0),
                  count.leftPad(8), m.defaultLoss.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0), m.summary)
        }
    }
}

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a dataset's four IDX files, verify their SHA-256, write them atomically.")
    @Argument(help: "mnist or fashion-mnist") var dataset: DatasetName
    @Option(help: "Destination folder (default: ./data/<dataset>).") var dataDir: String?
    @Option(help: "Mirror URL prefix to download from instead of the public mirror (file:// works).") var mirror: String?

    func run() throws {
        if let d = dataDir, d.isEmpty { throw AETError.usage("--data-dir: empty path") }
        let dir = dataDir ?? "./data/\(dataset.rawValue)"
        try DataSource.fetch(dataset, into: dir, mirror: mirror) { printError($0) }
        print(dir)
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
