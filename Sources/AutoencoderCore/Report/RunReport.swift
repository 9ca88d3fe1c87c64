import Foundation

/// What users look at after a run: OUT/report/ (figures + report.html) and the PCA baseline.
public enum RunReport {
    /// PCA of the training images at `components`, with its per-pixel test MSE.
    public static func pcaBaseline(train: Dataset, test: Dataset, components: Int) throws -> Double {
        let k = max(1, min(components, train.dim, train.count - 1))
        let pca = try train.withPixels {
            try PCA.fit(images: $0.baseAddress!, count: train.count, dim: train.dim, components: k)
        }
        return test.withPixels {
            pca.meanSquaredError(images: $0.baseAddress!, count: test.count, dim: test.dim)
        }
    }

    /// The per-pixel test MSE of the simplest baseline: every test image predicted by the mean
    /// training image.
    public static func meanImageBaseline(train: Dataset, test: Dataset) -> Double {
        let d = train.dim
        guard train.count > 0, test.count > 0, test.dim == d else { return .nan }
        var sum = [Double](repeating: 0, count: d)
        for i in 0..<train.count { for j in 0..<d { sum[j] += Double(train.pixels[i * d + j]) } }
        let mean = sum.map { $0 / Double(train.count) / 255 }
        var se = 0.0
        for i in 0..<test.count {
            for j in 0..<d {
                let e = Double(test.pixels[i * d + j]) / 255 - mean[j]
                se += e * e
            }
        }
        return se / Double(test.count * d)
    }

    /// One test image index per class (the first of each label), in label order.
    public static func onePerClass(_ ds: Dataset) -> [Int] {
        var first = [Int](repeating: -1, count: 10)
        for i in 0..<ds.count where first[Int(ds.labels[i])] < 0 { first[Int(ds.labels[i])] = i }
        return first.filter { $0 >= 0 }
    }

    static func images(_ flat: [Float], count: Int, dim: Int = 784) -> [[Float]] {
        (0..<count).map { Array(flat[($0 * dim)..<(($0 + 1) * dim)]) }
    }

    /// Gathers the images at `idx` of `ds` into a new small dataset (for per-class views).
    static func subset(_ ds: Dataset, _ idx: [Int]) -> Dataset {
        var px: [UInt8] = []
        ds.withPixels { all in for i in idx { px.append(contentsOf: all[(i * ds.dim)..<((i + 1) * ds.dim)]) } }
        return Dataset(name: ds.name, count: idx.count, rows: ds.rows, cols: ds.cols, pixels: px, labels: idx.map { ds.labels[$0] })
    }

    /// Decodes `count` samples z ~ N(0, I) (VAE), keyed by `seed`.
    public static func priorSamples(model: Autoencoder, count: Int, seed: UInt64) -> [[Float]] {
        (0..<count).map { priorSample(model: model, index: $0, seed: seed) }
    }

    /// Sample `index` of `priorSamples` alone (for streaming many of them).
    public static func priorSample(model: Autoencoder, index i: Int, seed: UInt64) -> [Float] {
        var g = Streams.rng(seed: seed, stream: Streams.generate, UInt64(i))
        let z = (0..<model.latent).map { _ in g.normal() }
        return decode(model: model, z: z)
    }

    static func decode(model: Autoencoder, z: [Float]) -> [Float] {
        z.withUnsafeBufferPointer { model.decode(from: $0.baseAddress!, 1) }
        return (0..<model.inputDim).map { logistic(model.logits[$0]) }
    }

    /// The classic 2-D latent manifold: a grid of decodings at normal quantiles.
    public static func manifold(model: Autoencoder, side: Int = 15) -> [[[Float]]] {
        func probit(_ p: Double) -> Double {  // inverse normal CDF (Acklam's rational approximation)
            let a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690, -30.66479806614716, 2.506628277459239]
            let b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572]
            let c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783]
            let d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416]
            if p < 0.02425 {
                let q = (-2 * log(p)).squareRoot()
                return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
            }
            if p > 1 - 0.02425 { return -probit(1 - p) }
            let q = p - 0.5, r = q * q
            return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        }
        let qs = (0..<side).map { probit(0.05 + 0.9 * Double($0) / Double(side - 1)) }
        return qs.reversed().map { y in qs.map { x in decode(model: model, z: [Float(x), Float(y)]) } }
    }

    /// Loss curves from OUT/metrics.jsonl (complete across resumes).
    static func curves(out: String) -> ([(step: Int, loss: Double)], [(step: Int, mse: Double)]) {
        var train: [(step: Int, loss: Double)] = [], test: [(step: Int, mse: Double)] = []
        let text = (try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            guard let o = JSON.parseObject(String(line)), let s = o["step"] as? Int else { continue }
            if let m = o["test_mse"] as? Double { test.append((s, m)) } else if let l = o["loss"] as? Double { train.append((s, l)) }
        }
        return (train, test)
    }

    /// Writes OUT/report/ for a trained model (rank 0 only).
    @discardableResult
    public static func write(trainer t: Trainer, summary typed: RunSummary, pcaTestMSE: Double?) throws -> [String] {
        let config = t.config, model = t.model, test = t.testSet
        let idx = onePerClass(test)
        let views = subset(test, idx)
        let loader = BatchLoader(views, binarize: config.binarize)
        let rec = Inference.reconstruct(model: model, loader: loader, count: views.count, noise: config.noise, seed: config.seed)
        let originals = (0..<views.count).map { i in (0..<784).map { Float(views.pixels[i * 784 + $0]) / 255 } }
        let codeCount = min(test.count, 10_000)
        let codes = Inference.encode(model: model, loader: BatchLoader(test, binarize: config.binarize), count: codeCount)
        let (trainCurve, testCurve) = curves(out: config.out)
        var samples: [[Float]]? = nil, grid: [[[Float]]]? = nil
        if config.model.variational {
            samples = priorSamples(model: model, count: 100, seed: config.seed)
            if model.latent == 2 { grid = manifold(model: model) }
        }
        let summary = try typed.jsonObject()
        let rows = summary.keys.sorted().map { (key: $0, value: summary[$0]! as Any) }
        let written = RunConfigFile.written(t.config)
        let inputs = ReportInputs(
            title: "aetrain: \(config.model.name) on \(config.dataset.rawValue)",
            config: written.keys.sorted().map { (key: $0, value: written[$0]! as Any) }, summary: rows, classNames: config.dataset.classNames,
            originals: originals, reconstructions: images(rec.output, count: views.count),
            noisy: config.noise == nil ? nil : images(rec.noisy, count: views.count),
            codes: codes, codeDim: model.latent, codeLabels: Array(test.labels.prefix(codeCount)),
            trainLoss: trainCurve, testMSE: testCurve, samples: samples, manifold: grid,
            aeTestMSE: typed.testMSE, pcaTestMSE: pcaTestMSE,
            pcaComponents: pcaTestMSE == nil ? nil : min(model.latent, 784),
            meanImageTestMSE: typed.meanImageTestMSE)
        var withExtras = inputs
        withExtras.extraFigures = t.reportExtras
        return try Report.write(withExtras, to: URL(fileURLWithPath: config.out).appendingPathComponent("report"))
    }
}
