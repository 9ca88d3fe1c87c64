import ArgumentParser
import AutoencoderCore
import Foundation

/// Options for commands that read a checkpoint and a split.
struct CheckpointData: ParsableArguments {
    @Option(help: "Checkpoint (.safetensors) written by aetrain train.") var checkpoint: String
    @Option(help: "Dataset (default: the checkpoint's).") var dataset: DatasetName?
    @Option(help: "Folder holding the four IDX files.") var dataDir: String?
    @Option(help: "Split: test or train.") var split: Split = .test
    @Option(help: "Use only the first N images of the split.") var limit: Int?

    /// Rank 0 loads the checkpoint and the split and runs `body`; a failure stops every rank.
    func onRoot(_ what: String, _ body: @escaping (Checkpoint.Loaded, Autoencoder, Dataset, BatchLoader) throws -> Void) throws {
        let d = self
        try check()
        Job.run { comm in
            try comm.collectively(what) {
                guard comm.isRoot else { return }
                let (c, model) = try Checkpoint.loadModel(d.checkpoint)
                let ds = try d.load(c)
                try body(c, model, ds, BatchLoader(ds, binarize: c.config.binarize))
            }
        }
    }

    /// Flag checks before anything is read.
    func check() throws {
        if checkpoint.isEmpty { throw AETError.usage("--checkpoint: empty path") }
        if let d = dataDir, d.isEmpty { throw AETError.usage("--data-dir: empty path") }
        if let l = limit, l <= 0 { throw AETError.usage("--limit \(l): must be positive") }
    }

    func load(_ c: Checkpoint.Loaded) throws -> Dataset {
        try check()
        let ds = dataset ?? c.config.dataset
        let dir = try DataSource.resolve(ds, dataDir: dataDir ?? (ds == c.config.dataset && FileManager.default.fileExists(atPath: c.config.dataDir) && dataDir == nil ? c.config.dataDir : nil))
        return try IDX.load(dir: dir, split: split, limit: limit, name: ds.rawValue)
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reconstruction MSE and BCE of a checkpoint on a split (shared across ranks under mpirun).")
    @OptionGroup var data: CheckpointData

    func run() throws {
        let d = data
        try d.check()
        Job.run { comm in
            let loaded: (Checkpoint.Loaded, Autoencoder, Dataset)? = try comm.collectively("loading") {
                let (c, m) = try Checkpoint.loadModel(d.checkpoint)
                return (c, m, try d.load(c))
            }
            let (c, model, ds) = loaded!
            let e = Inference.evaluate(model: model, loader: BatchLoader(ds, binarize: c.config.binarize), comm: comm)
            if comm.isRoot {
                var obj: [String: Any] = ["checkpoint": d.checkpoint, "model": c.config.model.name, "dataset": ds.name,
                                          "split": d.split.rawValue, "count": ds.count, "mse": e.mse, "bce": e.bce,
                                          "step": c.position.step, "world_size": comm.size]
                if c.config.model.variational { obj["kl"] = e.pen }
                print(JSON.encode(obj))
            }
        }
    }
}

struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the latent codes (μ for the VAE) of a split as .npy (N, latent), labels beside it.")
    @OptionGroup var data: CheckpointData
    @Option(help: "Output .npy file; labels go to <name>.labels.npy.") var output: String

    func run() throws {
        let out = output
        if out.isEmpty { throw AETError.usage("--output: empty path") }
        try data.onRoot("encode") { _, model, ds, loader in
            let codes = Inference.encode(model: model, loader: loader, count: ds.count)
            // A device or FIFO (/dev/stdout) gets the codes in place; the labels then have no file
            // of their own to go beside it.
            let special = AtomicFile.isSpecial(out)
            try codes.withUnsafeBufferPointer {
                try NPY.write(floats: $0, shape: [ds.count, model.latent], to: URL(fileURLWithPath: out), special: .writeInPlace)
            }
            if special {
                printError("wrote \(out) (\(ds.count) × \(model.latent)); labels not written (--output is not a regular file)")
                return
            }
            let lp = labelsPath(out)
            try NPY.write(uint8: ds.labels, shape: [ds.count], to: URL(fileURLWithPath: lp))
            printError("wrote \(out) (\(ds.count) × \(model.latent)) and \(lp)")
        }
    }
}

func labelsPath(_ out: String) -> String {
    (out.hasSuffix(".npy") ? String(out.dropLast(4)) : out) + ".labels.npy"
}

struct Reconstruct: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write reconstructions of a split as .npy float32 (N, 28, 28).")
    @OptionGroup var data: CheckpointData
    @Option(help: "Output .npy file.") var output: String

    func run() throws {
        let out = output
        if out.isEmpty { throw AETError.usage("--output: empty path") }
        try data.onRoot("reconstruct") { _, model, ds, loader in
            let r = Inference.reconstruct(model: model, loader: loader, count: ds.count)
            try r.output.withUnsafeBufferPointer {
                try NPY.write(floats: $0, shape: [ds.count, 28, 28], to: URL(fileURLWithPath: out), special: .writeInPlace)
            }
            printError("wrote \(out) (\(ds.count) × 28 × 28)")
        }
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a checkpoint's metadata and tensor table (validates it).")
    @Argument(help: "Checkpoint file.") var checkpoint: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        // The same full validation as a load (metadata ranges, model, tensors, finite values).
        let c = try Checkpoint.read(checkpoint)
        let f = c.file
        let meta = f.metadata
        if json {
            let tensors: [[String: Any]] = f.tensors.map { ["name": $0.name, "dtype": $0.dtype, "shape": $0.shape,
                                                             "data_offsets": [$0.begin, $0.end]] }
            print(JSON.encode(["path": checkpoint, "metadata": meta, "tensors": tensors], pretty: true))
            return
        }
        print("checkpoint \(checkpoint): valid (format_version \(c.metadata.formatVersion), step \(c.metadata.step), \(c.layout.parameterCount) parameters)")
        for k in meta.keys.sorted() where k != "config" { print("  \(k): \(meta[k]!)") }
        print("  config: \(meta["config"] ?? "")")
        print("tensors:")
        for t in f.tensors {
            print("  " + t.name.padding(toLength: 44, withPad: " ", startingAt: 0) + " " + t.dtype + " "
                  + "[" + t.shape.map(String.init).joined(separator: ", ") + "]")
        }
    }
}

/// Hidden: exercises the communicator's collectives so the tests can run them under mpirun.
struct CommSelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "selftest-comm", shouldDisplay: false)

    func run() throws {
        Job.run { comm in
            let r = comm.rank, w = comm.size
            var failures: [String] = []
            // Float sum: rank r contributes r + i.
            var f = (0..<1000).map { Float(r) + Float($0) }
            comm.allreduceSum(&f, count: f.count, what: "float sum")
            for i in [0, 1, 999] where f[i] != Float(w * (w - 1) / 2) + Float(w * i) { failures.append("float sum at \(i): \(f[i])") }
            // Double sum.
            var d = [Double(r) * 0.5, 1.0]
            comm.allreduceSum(&d, count: 2, what: "double sum")
            if d[0] != Double(w * (w - 1)) / 4 || d[1] != Double(w) { failures.append("double sum \(d)") }
            // Empty contribution: a rank with no samples adds zeros; count 0 is a no-op.
            var e: [Float] = r == 0 ? [5, 5] : [0, 0]
            comm.allreduceSum(&e, count: 2, what: "empty slice sum")
            if e != [5, 5] { failures.append("empty slice sum \(e)") }
            var none: [Float] = [7]
            comm.allreduceSum(&none, count: 0, what: "zero-length sum")
            if none != [7] { failures.append("zero-length sum changed data") }
            // Broadcast from the last rank.
            var b: [UInt8] = r == w - 1 ? Array("hello from \(w - 1)".utf8) : []
            comm.broadcast(&b, root: w - 1, what: "broadcast")
            if String(decoding: b, as: UTF8.self) != "hello from \(w - 1)" { failures.append("broadcast got \(b)") }
            // Max.
            var m = [Double(r)]
            comm.allreduceMax(&m, count: 1, what: "max")
            if m[0] != Double(w - 1) { failures.append("max \(m)") }
            comm.barrier(what: "barrier")
            // Sub-communicators (for exchanges that work in groups of ranks): this rank's node
            // (every rank of the test shares one machine), and the ranks of the same parity.
            if let mpi = comm as? MPICommunicator {
                let node = mpi.splitByNode()
                if node.size != w || node.rank != r { failures.append("node communicator: rank \(node.rank) of \(node.size)") }
                let parity = mpi.split(color: r % 2, key: r)
                var p = [Double(r)]
                parity.allreduceSum(&p, count: 1, what: "parity sum")
                let expected = Double(stride(from: r % 2, to: w, by: 2).reduce(0, +))
                if parity.rank != r / 2 || parity.size != (w - r % 2 + 1) / 2 || p[0] != expected {
                    failures.append("parity communicator: rank \(parity.rank) of \(parity.size), sum \(p[0]) (expected \(expected))")
                }
            }
            // Agreement: rank w-1 fails, everyone must learn it.
            do {
                try comm.agree(r == w - 1 && w > 1 ? AETError("injected", exitCode: 3) : nil, what: "agree")
                if w > 1 { failures.append("agree did not report the failure") }
            } catch let err as AETError {
                if !(err.allRanks && (r == w - 1 ? err.message == "injected" : err.message.contains("rank \(w - 1) failed"))) {
                    failures.append("agree error \(err.message)")
                }
            }
            var bad = [Double(failures.count)]
            comm.allreduceSum(&bad, count: 1, what: "result")
            if !failures.isEmpty { printError("rank \(r): " + failures.joined(separator: "; ")) }
            if bad[0] > 0 { throw AETError("communicator self-test failed", exitCode: 1, allRanks: true) }
            if comm.isRoot { print("comm selftest ok size \(w)") }
        }
    }
}
