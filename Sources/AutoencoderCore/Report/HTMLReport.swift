import Foundation

/// Everything the end-of-run report shows. Images are row-major Float pixels in [0, 1]
/// (square, e.g. 784 = 28×28).
public struct ReportInputs {
    public var title: String
    /// The run's configuration as OUT/config.json has it (snake_case keys), shown last as a table.
    public var config: [(key: String, value: Any)]
    /// summary.json as ordered key/value rows (numbers, strings, lists, objects; formatted by
    /// ReportFormat). The headline takes its figures from here (test_mse, test_bce,
    /// samples_per_second, wall_seconds, world_size, precision, stop_reason, best_value, …).
    public var summary: [(key: String, value: Any)]
    public var classNames: [String]
    /// One clean test image per class (up to 10), in class order.
    public var originals: [[Float]]
    /// The model's output for each of `originals` (for denoising runs: for `noisy`).
    public var reconstructions: [[Float]]
    /// Denoising runs: the noisy inputs; the figure then shows rows noisy, clean, denoised.
    public var noisy: [[Float]]?
    /// Test-set latent codes, row-major (count × codeDim), with one label per row.
    public var codes: [Float]
    public var codeDim: Int
    public var codeLabels: [UInt8]
    /// Training loss at each logged step.
    public var trainLoss: [(step: Int, loss: Double)]
    /// Test MSE per epoch, at the step where the epoch ended.
    public var testMSE: [(step: Int, mse: Double)]
    /// VAE: images decoded from prior samples.
    public var samples: [[Float]]?
    /// VAE with a 2-D latent: rows of images decoded on a regular latent grid.
    public var manifold: [[[Float]]]?
    public var aeTestMSE: Double?
    public var pcaTestMSE: Double?
    public var pcaComponents: Int?
    /// The mean training image's test MSE (the other baseline).
    public var meanImageTestMSE: Double?
    /// Further figures already written beside report.html (e.g. the anomaly histogram), shown in
    /// their own section: (file name relative to the report folder, section title, caption).
    public var extraFigures: [(file: String, title: String, caption: String)] = []

    public init(title: String,
                config: [(key: String, value: Any)] = [],
                summary: [(key: String, value: Any)] = [],
                classNames: [String] = [],
                originals: [[Float]] = [],
                reconstructions: [[Float]] = [],
                noisy: [[Float]]? = nil,
                codes: [Float] = [],
                codeDim: Int = 0,
                codeLabels: [UInt8] = [],
                trainLoss: [(step: Int, loss: Double)] = [],
                testMSE: [(step: Int, mse: Double)] = [],
                samples: [[Float]]? = nil,
                manifold: [[[Float]]]? = nil,
                aeTestMSE: Double? = nil,
                pcaTestMSE: Double? = nil,
                pcaComponents: Int? = nil,
                meanImageTestMSE: Double? = nil) {
        self.title = title
        self.config = config
        self.summary = summary
        self.classNames = classNames
        self.originals = originals
        self.reconstructions = reconstructions
        self.noisy = noisy
        self.codes = codes
        self.codeDim = codeDim
        self.codeLabels = codeLabels
        self.trainLoss = trainLoss
        self.testMSE = testMSE
        self.samples = samples
        self.manifold = manifold
        self.aeTestMSE = aeTestMSE
        self.pcaTestMSE = pcaTestMSE
        self.pcaComponents = pcaComponents
        self.meanImageTestMSE = meanImageTestMSE
    }
}

/// Writes the end-of-run report folder: figures (PNG/SVG) and a self-contained report.html that
/// references them by relative paths, so the folder opens from disk with no server.
public enum Report {
    /// Integer upscaling of images in the PNG grids.
    public static let imageScale = 3
    /// Images per row in samples.png.
    public static let samplesPerRow = 10

    /// Writes the report into `dir` (created if needed) and returns the names of the files
    /// written, relative to `dir`, in order.
    @discardableResult
    public static func write(_ inputs: ReportInputs, to dir: URL) throws -> [String] {
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw AETError.io("\(dir.path): cannot create report directory: \(error.localizedDescription)")
        }
        let side = try imageSide(inputs)
        var written: [String] = []
        func put(_ name: String, _ data: Data) throws {
            try AtomicFile.write(data, to: dir.appendingPathComponent(name))
            written.append(name)
        }

        // Reconstructions.
        let reconRows: [[[Float]]]
        if let noisy = inputs.noisy {
            reconRows = [noisy, inputs.originals, inputs.reconstructions]
        } else {
            reconRows = [inputs.originals, inputs.reconstructions]
        }
        try put("reconstructions.png", ImageGrid.png(rows: reconRows, imageSide: side, scale: imageScale))

        // Latent codes.
        let latent = latentFigure(inputs)
        try put("latent.svg", Data(latent.svg.utf8))

        // Loss curves.
        let loss = lossFigure(inputs)
        try put("loss.svg", Data(loss.svg.utf8))

        // Generative figures.
        if let samples = inputs.samples {
            try put("samples.png", ImageGrid.png(rows: ImageGrid.rows(samples, perRow: samplesPerRow),
                                                 imageSide: side, scale: imageScale))
        }
        if let manifold = inputs.manifold {
            try put("manifold.png", ImageGrid.png(rows: manifold, imageSide: side, scale: 2))
        }

        let html = page(inputs, latentCaption: latent.caption, lossCaption: loss.caption,
                        files: Set(written))
        try put("report.html", Data(html.utf8))
        return written
    }

    // MARK: - Figures

    /// The side of the square images (checks that every image has side² values).
    static func imageSide(_ inputs: ReportInputs) throws -> Int {
        var all: [[Float]] = inputs.originals + inputs.reconstructions + (inputs.noisy ?? [])
        all += inputs.samples ?? []
        all += (inputs.manifold ?? []).flatMap { $0 }
        guard let first = all.first else { return 28 }
        let side = Int(Double(first.count).squareRoot().rounded())
        guard side > 0 && side * side == first.count else {
            throw AETError.data("report: image with \(first.count) pixels is not square")
        }
        if let bad = all.first(where: { $0.count != first.count }) {
            throw AETError.data("report: images differ in size (\(bad.count) vs \(first.count) pixels)")
        }
        return side
    }

    static func latentFigure(_ inputs: ReportInputs) -> (svg: String, caption: String) {
        let L = inputs.codeDim
        let n = L > 0 ? min(inputs.codes.count / L, inputs.codeLabels.count) : 0
        let labels = inputs.codeLabels.prefix(n).map { Int($0) }
        var x = [Double](), y = [Double]()
        let title: String, xl: String, yl: String
        var caption: String
        switch L {
        case ...0:
            title = "Latent code (none recorded)"; xl = "z1"; yl = "z2"
            caption = "No latent codes were recorded for this run."
        case 1:
            x = (0..<n).map { Double(inputs.codes[$0]) }
            var rng = SplitMix64(seed: 0x5EED)
            y = (0..<n).map { _ in Double(rng.uniform(-1, 1)) }
            title = "1-D latent code (vertical jitter only for visibility)"
            xl = "code value z"; yl = "random jitter (no meaning)"
            caption = "The 1-D latent code of \(n) test images, coloured by class; the vertical position is random jitter added only so points do not overlap."
        case 2:
            x = (0..<n).map { Double(inputs.codes[2 * $0]) }
            y = (0..<n).map { Double(inputs.codes[2 * $0 + 1]) }
            title = "2-D latent code of the test set"
            xl = "z1"; yl = "z2"
            caption = "The 2-D latent code of \(n) test images as they are, coloured by class."
        default:
            do {
                // Fit on the rows without NaN/inf (a diverged model); those rows are not drawn.
                let finite = (0..<n).map { r in (0..<L).allSatisfy { inputs.codes[r * L + $0].isFinite } }
                let rows = (0..<n).filter { finite[$0] }
                var data = [Float]()
                data.reserveCapacity(rows.count * L)
                for r in rows { data += inputs.codes[(r * L)..<((r + 1) * L)] }
                let pca = try PCA.fit(data: data, count: rows.count, dim: L, components: 2)
                let proj = data.withUnsafeBufferPointer { pca.project($0.baseAddress!, count: rows.count) }
                x = [Double](repeating: .nan, count: n)
                y = [Double](repeating: .nan, count: n)
                for (i, r) in rows.enumerated() {
                    x[r] = Double(proj[2 * i])
                    y[r] = Double(proj[2 * i + 1])
                }
                let r = pca.explainedVarianceRatio
                title = "PCA projection of the \(L)-D code"
                xl = "PC1 of the \(L)-D code (\(percent(r[0])) of variance)"
                yl = "PC2 of the \(L)-D code (\(percent(r[1])) of variance)"
                caption = "PCA projection of the \(L)-D latent code of \(n) test images onto its first two principal components (together \(percent(r[0] + r[1])) of the code variance), coloured by class."
            } catch {
                x = (0..<n).map { Double(inputs.codes[L * $0]) }
                y = (0..<n).map { Double(inputs.codes[L * $0 + 1]) }
                title = "First 2 of the \(L) code dimensions (PCA failed)"
                xl = "z1"; yl = "z2"
                caption = "The first two of the \(L) latent dimensions (the PCA projection failed: \(error))."
            }
        }
        let svg = SVGPlot.scatter(title: title, xLabel: xl, yLabel: yl, x: x, y: y,
                                  labels: labels, classNames: inputs.classNames)
        if n > 10_000 { caption += " An even subsample of 10,000 of the points is drawn." }
        return (svg, caption)
    }

    static func lossFigure(_ inputs: ReportInputs) -> (svg: String, caption: String) {
        let train = inputs.trainLoss.map { (x: Double($0.step), y: $0.loss) }
        let test = inputs.testMSE.map { (x: Double($0.step), y: $0.mse) }
        let values = (train + test).map(\.y).filter(\.isFinite)
        let positive = values.filter { $0 > 0 }
        let logY = !values.isEmpty && positive.count == values.count
            && (positive.max()! / positive.min()!) > 30
        let series = [
            SVGPlot.Series(name: "train loss (per logged step)", points: train, color: SVGPlot.palette[0]),
            SVGPlot.Series(name: "test MSE (per epoch)", points: test, color: SVGPlot.palette[3], markers: true),
        ]
        let svg = SVGPlot.line(title: "Training loss and test MSE", xLabel: "training step",
                               yLabel: logY ? "loss / MSE (log scale)" : "loss / MSE",
                               series: series, logY: logY)
        var caption = "Training loss at each logged step (blue) and test-set MSE at the end of each epoch, plotted at the step where the epoch ended (red dots)."
        if logY { caption += " The y axis is logarithmic." }
        return (svg, caption)
    }

    // MARK: - HTML

    /// Escapes text for HTML content and attribute values.
    public static func htmlEscape(_ s: String) -> String {
        var r = ""
        r.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": r += "&amp;"
            case "<": r += "&lt;"
            case ">": r += "&gt;"
            case "\"": r += "&quot;"
            case "'": r += "&#39;"
            default: r.unicodeScalars.append(c)
            }
        }
        return r
    }

    static func number(_ v: Double) -> String {
        v.isFinite ? String(format: "%.6g", v) : String(describing: v)
    }

    static func percent(_ v: Double) -> String { String(format: "%.1f%%", v * 100) }

    /// The PCA verdict under the headline: PCA with k components is the best linear
    /// autoencoder with a k-dimensional code.
    static func pcaBaseline(_ inputs: ReportInputs) -> String {
        guard let ae = inputs.aeTestMSE, let pca = inputs.pcaTestMSE else {
            return "<p class=\"verdict\">The PCA baseline was not computed for this run.</p>\n"
        }
        let k = inputs.pcaComponents.map { "\($0)" } ?? "?"
        let verdict: String
        if !(ae.isFinite && pca.isFinite) {
            verdict = "The comparison with PCA is undefined because one of the errors is not finite."
        } else if ae < pca {
            verdict = "<strong>The autoencoder is better</strong>: its test MSE is \(percent((pca - ae) / pca)) lower than that of PCA with \(htmlEscape(k)) components."
        } else if pca < ae {
            verdict = "<strong>PCA is better</strong>: its test MSE with \(htmlEscape(k)) components is \(percent((ae - pca) / ae)) lower than the autoencoder's."
        } else {
            verdict = "The autoencoder and PCA with \(htmlEscape(k)) components reach the same test MSE."
        }
        let code = inputs.codeDim > 0 ? " (the autoencoder's code has \(inputs.codeDim) dimensions)" : ""
        return "<p class=\"verdict\">\(verdict) PCA with k components is the best linear autoencoder with a k-dimensional code; here k = \(htmlEscape(k))\(htmlEscape(code)); both errors are per-pixel mean squared errors on the test images (PCA baseline).</p>\n"
    }

    static func figure(_ src: String, alt: String, caption: String) -> String {
        "<figure><img src=\"\(htmlEscape(src))\" alt=\"\(htmlEscape(alt))\"><figcaption>\(htmlEscape(caption))</figcaption></figure>\n"
    }

    /// The style shared by report.html and compare.html: no horizontal overflow at any width
    /// (figures scale down, long values wrap, wide tables scroll inside their box).
    public static let css = """
    body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; line-height: 1.45; }
    h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; margin-bottom: .5em; }
    h2 { font-size: 1.25em; margin-top: 1.6em; }
    p, li, figcaption, td, th { overflow-wrap: anywhere; }
    .headline { display: flex; flex-wrap: wrap; gap: .6em; margin: .8em 0; }
    .card { border: 1px solid #ddd; border-radius: 6px; padding: .45em .8em; background: #fafafa; min-width: 8.5em; }
    .card .label { display: block; font-size: .8em; color: #555; }
    .card .value { display: block; font-size: 1.3em; font-weight: bold; }
    .card .note { display: block; font-size: .78em; color: #666; }
    .card.main { background: #eaf3ff; border-color: #9cc3f5; }
    .card.main .value { font-size: 1.7em; }
    .verdict { font-size: 1.02em; }
    table.kv { border-collapse: collapse; margin: .5em 0; }
    table.kv th, table.kv td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; font-size: .9em; }
    table.kv th { background: #f3f3f3; font-weight: normal; font-family: "DejaVu Sans Mono", monospace; white-space: nowrap; }
    table.kv td { font-variant-numeric: tabular-nums; }
    table.sub { border-collapse: collapse; font-size: .92em; }
    table.sub th, table.sub td { border: 0; padding: 0 .8em 0 0; background: none; font-family: inherit; }
    tr.diff th, tr.diff td { background: #fff1b8; }
    .scroll { overflow-x: auto; max-width: 100%; }
    figure { margin: 1em 0; }
    figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
    img[src$=".png"], img.pixels { image-rendering: pixelated; }
    figcaption { font-size: .9em; color: #555; margin-top: .3em; }
    .grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); gap: 0 1.2em; }
    ul.runs { padding-left: 1.2em; }
    .swatch { display: inline-block; width: .9em; height: .9em; margin-right: .35em; vertical-align: middle; border-radius: 2px; }
    .path { color: #666; font-size: .85em; }
    """

    /// The figures the headline shows, taken from the summary rows.
    static func headline(_ inputs: ReportInputs) -> String {
        func value(_ k: String) -> Any? { inputs.summary.first { $0.key == k }?.value }
        func double(_ k: String) -> Double? { (value(k) as? Double) ?? (value(k) as? Int).map(Double.init) }
        func card(_ label: String, _ v: String, note: String? = nil, main: Bool = false) -> String {
            "<div class=\"card\(main ? " main" : "")\"><span class=\"label\">\(htmlEscape(label))</span><span class=\"value\">\(htmlEscape(v))</span>"
                + (note.map { "<span class=\"note\">\(htmlEscape($0))</span>" } ?? "") + "</div>"
        }
        var cards: [String] = []
        let ae = inputs.aeTestMSE ?? double("test_mse")
        if let ae { cards.append(card("test MSE (per pixel)", ReportFormat.number(ae), main: true)) }
        if let b = double("test_bce") { cards.append(card("test BCE (per pixel)", ReportFormat.number(b))) }
        if let p = inputs.pcaTestMSE {
            cards.append(card("PCA, \(inputs.pcaComponents.map(String.init) ?? "?") components", ReportFormat.number(p), note: "test MSE, same code size"))
        }
        if let m = inputs.meanImageTestMSE { cards.append(card("mean image", ReportFormat.number(m), note: "test MSE of predicting it")) }
        if let v = double("best_value"), let k = value("monitor") as? String {
            let at = (value("best_step") as? Int).map { "at step \(ReportFormat.grouped($0))" }
            cards.append(card("best \(k)", ReportFormat.number(v), note: at))
        }
        if let r = value("stop_reason") as? String { cards.append(card("stopped by", r.replacingOccurrences(of: "_", with: " "))) }
        if let s = double("samples_per_second") { cards.append(card("training samples/s", ReportFormat.number(s))) }
        if let w = double("wall_seconds") { cards.append(card("wall time", ReportFormat.duration(w))) }
        if let n = value("world_size") as? Int { cards.append(card("ranks", String(n), note: value("grad_sync").map { "exchange \(ReportFormat.text($0))" })) }
        if let p = value("compute_precision") as? String { cards.append(card("precision", p)) }
        var h = "<div class=\"headline\">\n" + cards.joined(separator: "\n") + "\n</div>\n"
        h += pcaBaseline(inputs)
        if let ae, let m = inputs.meanImageTestMSE, ae.isFinite, m.isFinite, m > 0 {
            h += "<p class=\"verdict\">Against the mean image (the error of predicting every test image by the average training image) the autoencoder's test MSE is \(ae < m ? "\(percent((m - ae) / m)) lower" : "\(percent((ae - m) / m)) higher").</p>\n"
        }
        return h
    }

    static func page(_ inputs: ReportInputs, latentCaption: String, lossCaption: String,
                     files: Set<String>) -> String {
        let t = htmlEscape(inputs.title)
        var h = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(t)</title>
        <style>
        \(css)
        </style>
        </head>
        <body>
        <h1>\(t)</h1>

        """
        h += headline(inputs)

        h += "<h2>Reconstructions</h2>\n"
        let cols = inputs.originals.count
        let names = inputs.classNames.prefix(cols).enumerated().map { "\($0.offset) \($0.element)" }
        let colText = names.isEmpty ? "" : " Columns, left to right: " + names.joined(separator: ", ") + "."
        let reconCaption = inputs.noisy != nil
            ? "Denoising: top row the noisy inputs, middle row the clean test images, bottom row the model's denoised outputs.\(colText)"
            : "Top row: clean test images (one per class); bottom row: their reconstructions.\(colText)"
        h += figure("reconstructions.png", alt: "reconstructions", caption: reconCaption)

        h += "<div class=\"grid2\">\n<div>\n<h2>Training curves</h2>\n"
        h += figure("loss.svg", alt: "loss curves", caption: lossCaption)
        h += "</div>\n<div>\n<h2>Latent space</h2>\n"
        h += figure("latent.svg", alt: "latent codes", caption: latentCaption)
        h += "</div>\n</div>\n"

        if files.contains("samples.png") || files.contains("manifold.png") {
            h += "<h2>Generated images</h2>\n"
            if files.contains("samples.png") {
                h += figure("samples.png", alt: "samples",
                            caption: "Images decoded from \(inputs.samples?.count ?? 0) samples of the prior N(0, I).")
            }
            if files.contains("manifold.png") {
                h += figure("manifold.png", alt: "latent manifold",
                            caption: "Images decoded on a regular grid over the 2-D latent space (rows and columns step through the two latent coordinates).")
            }
        }

        for extra in inputs.extraFigures {
            h += "<h2>\(htmlEscape(extra.title))</h2>\n"
            h += figure(extra.file, alt: extra.title, caption: extra.caption)
        }

        h += "<h2>Summary</h2>\n"
        if inputs.summary.isEmpty {
            h += "<p>No summary values.</p>\n"
        } else {
            h += "<p>summary.json, rounded for reading (the file keeps every digit).</p>\n<div class=\"scroll\"><table class=\"kv\">\n"
            for (k, v) in inputs.summary {
                h += "<tr><th>\(htmlEscape(k))</th><td>\(ReportFormat.html(v))</td></tr>\n"
            }
            h += "</table></div>\n"
        }

        h += "<h2>Configuration</h2>\n"
        if inputs.config.isEmpty {
            h += "<p>No configuration recorded.</p>\n"
        } else {
            h += "<p>As in config.json (keys are the flags in snake_case; <code>aetrain train --config config.json</code> repeats the run).</p>\n"
            h += "<div class=\"scroll\"><table class=\"kv\">\n"
            for (k, v) in inputs.config {
                h += "<tr><th>\(htmlEscape(k))</th><td>\(ReportFormat.html(v))</td></tr>\n"
            }
            h += "</table></div>\n"
        }
        h += "</body>\n</html>\n"
        return h
    }
}
