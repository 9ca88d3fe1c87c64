import ArgumentParser
import AutoencoderCore
import Foundation

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode samples from the prior N(0, I) of a VAE checkpoint into a .png grid or a .npy (N, 28, 28).")
    @Option(help: "VAE checkpoint.") var checkpoint: String
    @Option(help: "Number of samples.") var count: Int = 64
    @Option(help: "Output .png or .npy.") var output: String
    @Option(help: "Random seed for the prior samples.") var seed: UInt64 = 0

    /// At most this many samples: a .png grid of 10,000 is 8,600 pixels square; a .npy is
    /// streamed one sample at a time, 3.1 KB each.
    static let maxPNG = 10_000, maxNPY = 10_000_000

    func run() throws {
        guard output.hasSuffix(".png") || output.hasSuffix(".npy") else {
            throw AETError.usage("--output \(output): must end in .png or .npy")
        }
        let png = output.hasSuffix(".png")
        let limit = png ? Generate.maxPNG : Generate.maxNPY
        guard count > 0 && count <= limit else {
            throw AETError.usage("--count \(count): must be in 1...\(limit) for a .\(png ? "png grid" : "npy file")")
        }
        let (c, model) = try Checkpoint.loadModel(checkpoint, maxBatch: 1)
        guard c.config.model.variational else {
            throw AETError.usage("--checkpoint \(checkpoint): model \(c.config.model.name) is not a VAE; generate needs --model vae")
        }
        let url = URL(fileURLWithPath: output)
        if png {
            let samples = RunReport.priorSamples(model: model, count: count, seed: seed)
            let perRow = Int(Double(count).squareRoot().rounded(.up))
            try AtomicFile.write(ImageGrid.png(rows: ImageGrid.rows(samples, perRow: perRow)), to: url, special: .writeInPlace)
        } else {
            try NPY.writeRows(shape: [count, 28, 28], to: url, special: .writeInPlace) { i, row in
                let s = RunReport.priorSample(model: model, index: i, seed: seed)
                for k in 0 ..< row.count { row[k] = s[k] }
            }
        }
        printError("wrote \(count) samples to \(output)")
    }
}

struct PCACommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pca",
        abstract: "PCA baseline: fit K components on the training images (LAPACK), report the per-pixel test MSE.")
    @Option(help: "Number of components.") var components: Int = 32
    @Option(help: "Dataset.") var dataset: DatasetName = .fashionMNIST
    @Option(help: "Folder holding the four IDX files.") var dataDir: String?

    func run() throws {
        guard components > 0 && components <= 784 else { throw AETError.usage("--components \(components): must be in 1...784") }
        let dir = try DataSource.resolve(dataset, dataDir: dataDir)
        let train = try IDX.load(dir: dir, split: .train, name: dataset.rawValue)
        let test = try IDX.load(dir: dir, split: .test, name: dataset.rawValue)
        let mse = try RunReport.pcaBaseline(train: train, test: test, components: components)
        print(JSON.encode(["dataset": dataset.rawValue, "components": components, "pca_test_mse": mse]))
    }
}

struct Anomaly: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Anomaly detection: train on --normal-class only (or take --checkpoint), score every test image by reconstruction error.")
    @OptionGroup var options: TrainOptions
    @Option(help: "The normal class (0-9).") var normalClass: Int
    @Option(help: "Score with this checkpoint instead of training.") var checkpoint: String?

    func run() throws {
        let opts = options, normal = normalClass, ckpt = checkpoint
        try opts.preflight()
        if let ckpt, ckpt.isEmpty { throw AETError.usage("--checkpoint: empty path") }
        Job.run(collectiveTimeout: opts.collectiveTimeout) { comm in
            let config = try comm.collectively("reading the configuration") { try opts.resolve(normalClass: normal, training: ckpt == nil) }!
            if let ckpt {
                // Scoring with a checkpoint is rank 0's job; the other ranks only wait for its verdict.
                try comm.waitingForRoot { try comm.collectively("anomaly scoring") {
                    guard comm.isRoot else { return }
                    try RunFolder.prepare(out: config.out)
                    let (loaded, model) = try Checkpoint.loadModel(ckpt)
                    let test = try IDX.load(dir: config.dataDir, split: .test, limit: config.testLimit, name: config.dataset.rawValue)
                    var summary = RunSummary(model: loaded.config.model.name)
                    summary.dataset = config.dataset.rawValue
                    summary.checkpoint = ckpt
                    try Anomaly.score(model: model, test: test, config: config, summary: &summary)
                    try summary.write(out: config.out)
                } }
            } else {
                try TrainingRun.train(config, comm: comm) { trainer, s in
                    guard comm.isRoot else { return }
                    try Anomaly.score(model: trainer.model, test: trainer.testSet, config: config, summary: &s)
                    trainer.reportExtras.append((file: "anomaly_hist.svg", title: "Anomaly detection",
                                                 caption: String(format: "Per-image reconstruction MSE of the test images: class %d (normal) against the other classes; ROC-AUC %.4f. The dashed line is the threshold at the 95th percentile of the normal scores (precision %.3f, recall %.3f).",
                                                                 normal, s.rocAuc ?? .nan, s.precision ?? .nan, s.recall ?? .nan)))
                }
            }
        }
    }

    /// Scores every test image (mean squared reconstruction error per image), writes ROC-AUC,
    /// per-class errors, the 95th-percentile threshold with precision/recall, and a histogram.
    static func score(model: Autoencoder, test: Dataset, config: TrainConfig, summary: inout RunSummary) throws {
        let normal = config.normalClass!
        let loader = BatchLoader(test, binarize: config.binarize)
        let rec = Inference.reconstruct(model: model, loader: loader, count: test.count)
        var scores = [Double](repeating: 0, count: test.count)
        for i in 0..<test.count {
            var s: Float = 0
            for k in 0..<784 {
                let e = rec.output[i * 784 + k] - Float(test.pixels[i * 784 + k]) / 255
                s += e * e
            }
            scores[i] = Double(s / 784)
        }
        let anomalous = test.labels.map { Int($0) != normal }
        let auc = ROC.auc(scores: scores, positives: anomalous)
        let normalScores = zip(scores, anomalous).filter { !$0.1 }.map(\.0)
        let otherScores = zip(scores, anomalous).filter { $0.1 }.map(\.0)
        let threshold = ROC.percentile(normalScores, 95)
        let pr = ROC.precisionRecall(scores: scores, positives: anomalous, threshold: threshold)
        var perClass: [String: Double] = [:]
        for c in 0..<10 {
            let s = zip(scores, test.labels).filter { Int($0.1) == c }.map(\.0)
            if !s.isEmpty { perClass[config.dataset.classNames[c]] = s.reduce(0, +) / Double(s.count) }
        }
        summary.normalClass = normal
        summary.rocAuc = auc
        summary.perClassMeanError = perClass
        summary.threshold = threshold
        summary.thresholdPercentile = 95
        summary.precision = pr.precision
        summary.recall = pr.recall
        let dir = URL(fileURLWithPath: config.out).appendingPathComponent("report")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let svg = SVGPlot.histogram(title: "Reconstruction error: class \(config.dataset.classNames[normal]) (normal) vs the rest, ROC-AUC \(String(format: "%.3f", auc))",
                                    xLabel: "per-image MSE", yLabel: "density",
                                    sets: [.init(name: "normal (\(config.dataset.classNames[normal]))", values: normalScores),
                                           .init(name: "anomalous (other classes)", values: otherScores)],
                                    threshold: threshold, thresholdLabel: "threshold")
        try AtomicFile.write(svg.data(using: .utf8)!, to: dir.appendingPathComponent("anomaly_hist.svg"))
        summary.histogram = dir.appendingPathComponent("anomaly_hist.svg").path
        printError(String(format: "anomaly: normal class %d, ROC-AUC %.4f, threshold %.5f (precision %.3f, recall %.3f)",
                          normal, auc, threshold, pr.precision, pr.recall))
    }
}

struct Denoise: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "PSNR of noisy and denoised test images against the clean ones; writes the noisy/clean/denoised grid.")
    @OptionGroup var data: CheckpointData
    @Option(help: "Noise: gaussian:STD, speckle:STD, salt-pepper:P, mask:P.") var noise: String = "gaussian:0.5"
    @Option(help: "Grid PNG to write (noisy, clean, denoised rows).") var output: String = "denoise.png"
    @Option(help: "Seed for the noise.") var seed: UInt64 = 0

    func run() throws {
        let spec = try NoiseSpec(parsing: noise)
        try data.check()
        if output.isEmpty { throw AETError.usage("--output: empty path") }
        let (c, model) = try Checkpoint.loadModel(data.checkpoint)
        let ds = try data.load(c)
        let loader = BatchLoader(ds, binarize: c.config.binarize)
        let r = Inference.reconstruct(model: model, loader: loader, count: ds.count, noise: spec, seed: seed)
        func psnr(_ a: [Float]) -> Double {
            var total = 0.0
            for i in 0..<ds.count {
                var s: Float = 0
                for k in 0..<784 {
                    let e = a[i * 784 + k] - Float(ds.pixels[i * 784 + k]) / 255
                    s += e * e
                }
                total += 10 * log10(1 / max(Double(s / 784), 1e-10))
            }
            return total / Double(ds.count)
        }
        let idx = RunReport.onePerClass(ds)
        func pick(_ flat: [Float]) -> [[Float]] { idx.map { Array(flat[($0 * 784)..<(($0 + 1) * 784)]) } }
        let clean = idx.map { i in (0..<784).map { Float(ds.pixels[i * 784 + $0]) / 255 } }
        try AtomicFile.write(ImageGrid.png(rows: [pick(r.noisy), clean, pick(r.output)]), to: URL(fileURLWithPath: output),
                             special: .writeInPlace)
        print(JSON.encode(["checkpoint": data.checkpoint, "noise": spec.description, "count": ds.count,
                           "psnr_noisy_db": psnr(r.noisy), "psnr_denoised_db": psnr(r.output), "grid": output]))
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the core's matrix-product peak: oneDNN matmul GFLOP/s in f32 and bf16 at 512³ and at mlp3's shapes, and OpenBLAS sgemm (the reference of Launch/bench.sh); prints JSON.")
    @Option(help: "Compute threads (oneDNN's OpenMP threads and OpenBLAS's).") var threads: Int = 1

    func run() throws {
        guard (1...1024).contains(threads) else { throw AETError.usage("--threads \(threads): must be in 1...1024") }
        SgemmBench.setThreads(threads)
        // Square, and the products of an mlp3 step at batch 128: forward (x·Wᵀ), weight gradient
        // (dzᵀ·x) and input gradient (dz·W) of the 784-128 layers.
        let shapes: [(Int, Int, Int, SgemmBench.Form)] = [(512, 512, 512, .nn), (128, 128, 784, .nt), (128, 784, 128, .tn), (128, 784, 128, .nn)]
        var out: [String: Any] = ["threads": threads, "onednn_version": DNNL.version, "isa": DNNL.isa]
        for p in Precision.allCases where p == .f32 || DNNL.bf16Supported {
            var best = 0.0
            for (m, n, k, form) in shapes {
                let r = SgemmBench.matmul(m: m, n: n, k: k, form: form, precision: p)
                out["matmul_\(p)_\(m)x\(n)x\(k)_\(form)_gflops"] = r.gflops
                if m == 512 { out["matmul_\(p)_implementation"] = r.implementation }
                best = max(best, r.gflops)
            }
            out["peak_\(p)_gflops"] = best
        }
        var sgemm = 0.0
        for (m, n, k) in [(512, 512, 512), (128, 784, 128), (128, 128, 784)] {
            let g = SgemmBench.gflops(m: m, n: n, k: k)
            out["sgemm_\(m)x\(n)x\(k)_gflops"] = g
            sgemm = max(sgemm, g)
        }
        out["sgemm_gflops"] = sgemm
        print(JSON.encode(out))
    }
}
