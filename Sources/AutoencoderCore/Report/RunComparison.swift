import Foundation

/// `aetrain compare RUN_DIR…`: one self-contained page (figures inside as data URIs, no
/// network, no script) with the runs' curves overlaid, their configs side by side with the keys
/// that differ marked, their summaries side by side and their reconstruction grids stacked; and
/// a plain-text table for the terminal.
public enum RunComparison {
    /// The summary keys the tables lead with, in this order; the others follow sorted.
    public static let leadingKeys = [
        "model", "dataset", "world_size", "grad_sync", "global_batch_size", "steps", "epochs_completed", "stop_reason",
        "test_mse", "test_bce", "val_mse", "monitor", "best_value", "best_step", "pca_test_mse", "mean_image_test_mse",
        "train_loss", "samples_per_second", "train_seconds", "wall_seconds",
    ]

    /// Short names: the folders' last components, or the paths as given when those repeat.
    public static func labels(_ runs: [RunHistory]) -> [String] {
        let last = runs.map { ($0.folder as NSString).lastPathComponent }
        return Set(last).count == last.count ? last : runs.map(\.folder)
    }

    /// The config keys whose values are not the same in every run (a key one run lacks counts).
    public static func differingKeys(_ runs: [RunHistory]) -> [String] {
        let keys = Set(runs.flatMap { $0.config.keys })
        return keys.filter { k in Set(runs.map { ReportFormat.text($0.config[k]) }).count > 1 }.sorted()
    }

    static func summaryKeys(_ runs: [RunHistory]) -> [String] {
        let all = Set(runs.flatMap { $0.summary.keys })
        return leadingKeys.filter(all.contains) + all.subtracting(leadingKeys).sorted()
    }

    // MARK: text

    /// The plain-text table (stdout): one row per run, then the config keys that differ.
    public static func text(_ runs: [RunHistory]) -> String {
        let names = labels(runs)
        let columns: [(String, String)] = [
            ("model", "model"), ("world_size", "ranks"), ("steps", "steps"), ("stop_reason", "stop"), ("test_mse", "test_mse"),
            ("test_bce", "test_bce"), ("best_value", "best"), ("pca_test_mse", "pca_mse"), ("samples_per_second", "samples/s"),
            ("wall_seconds", "wall_s"),
        ]
        var rows = [["run"] + columns.map(\.1)]
        for (i, r) in runs.enumerated() {
            rows.append([names[i]] + columns.map { ReportFormat.text(r.summary[$0.0]) })
        }
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        var out = ""
        for (n, row) in rows.enumerated() {
            out += row.enumerated().map { c, cell in
                c == 0 ? cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                       : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ") + "\n"
            if n == 0 { out += String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)) + "\n" }
        }
        let diff = differingKeys(runs)
        if runs.contains(where: { !$0.hasConfig }) {
            out += "note: no config.json in " + runs.filter { !$0.hasConfig }.map(\.folder).joined(separator: ", ") + " (written by aetrain before config files)\n"
        }
        if diff.isEmpty {
            out += "config: the same in every run\n"
        } else {
            out += "config keys that differ:\n"
            for k in diff {
                out += "  \(k): " + runs.indices.map { "\(names[$0]) \(ReportFormat.text(runs[$0].config[k]))" }.joined(separator: ", ") + "\n"
            }
        }
        return out
    }

    // MARK: HTML

    static func curve(_ title: String, x: String, y: String, runs: [RunHistory], names: [String],
                      points: (RunHistory) -> [(x: Double, y: Double)], markers: Bool) -> String? {
        let series = runs.indices.map {
            SVGPlot.Series(name: names[$0], points: points(runs[$0]), color: SVGPlot.palette[$0 % SVGPlot.palette.count], markers: markers)
        }
        guard series.contains(where: { !$0.points.isEmpty }) else { return nil }
        let values = series.flatMap { $0.points.map(\.y) }.filter(\.isFinite)
        let logY = !values.isEmpty && values.allSatisfy { $0 > 0 } && values.max()! / values.min()! > 30
        return SVGPlot.line(title: title, xLabel: x, yLabel: logY ? y + " (log scale)" : y, series: series, logY: logY)
    }

    /// The page, well-formed XML as well as HTML (void elements closed), every figure inline.
    public static func html(_ runs: [RunHistory]) -> String {
        let names = labels(runs)
        let esc = Report.htmlEscape
        var h = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8"/>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title>aetrain: \(esc(names.joined(separator: " vs ")))</title>
        <style>
        \(Report.css)
        </style>
        </head>
        <body>
        <h1>aetrain compare: \(runs.count) run\(runs.count == 1 ? "" : "s")</h1>

        """
        h += "<ul class=\"runs\">\n"
        for (i, r) in runs.enumerated() {
            let color = SVGPlot.palette[i % SVGPlot.palette.count]
            let s = r.summary
            h += "<li><span class=\"swatch\" style=\"background: \(color)\"></span><strong>\(esc(names[i]))</strong> "
            h += "\(esc(ReportFormat.text(s["model"]))) on \(esc(ReportFormat.text(s["dataset"]))), test MSE \(esc(ReportFormat.text(s["test_mse"]))) "
            h += "<span class=\"path\">(\(esc(r.folder)))</span></li>\n"
        }
        h += "</ul>\n"

        let diff = differingKeys(runs)
        h += "<h2>Config keys that differ</h2>\n"
        if diff.isEmpty {
            h += "<p>The runs have the same configuration\(runs.contains { !$0.hasConfig } ? " (as far as their config.json files tell; some runs have none)" : "").</p>\n"
        } else {
            h += "<p>\(diff.map { "<code>\(esc($0))</code>" }.joined(separator: ", ")): marked in the configuration table below.</p>\n"
        }

        h += "<h2>Training curves</h2>\n<div class=\"grid2\">\n"
        let figures: [(String, String, String, (RunHistory) -> [(x: Double, y: Double)], Bool)] = [
            ("Training loss by step", "training step", "loss", { $0.trainLoss.map { (Double($0.step), $0.value) } }, false),
            ("Test MSE by step", "training step", "test MSE", { $0.testMSE.map { (Double($0.step), $0.value) } }, true),
            ("Training loss by wall time", "seconds since training started", "loss",
             { $0.trainLoss.compactMap { p in p.seconds.map { ($0, p.value) } } }, false),
            ("Test MSE by wall time", "seconds since training started", "test MSE",
             { $0.testMSE.compactMap { p in p.seconds.map { ($0, p.value) } } }, true),
        ]
        for (title, x, y, points, markers) in figures {
            guard let svg = curve(title, x: x, y: y, runs: runs, names: names, points: points, markers: markers) else {
                h += "<p>\(esc(title)): no run recorded these values.</p>\n"
                continue
            }
            h += "<figure><img src=\"\(ReportFormat.dataURI(Data(svg.utf8), type: "image/svg+xml"))\" alt=\"\(esc(title))\"/>"
            h += "<figcaption>\(esc(title)): one line per run, coloured as in the list above.</figcaption></figure>\n"
        }
        h += "</div>\n"

        h += "<h2>Summaries</h2>\n"
        h += table(rows: summaryKeys(runs), names: names, marked: []) { runs[$1].summary[$0] }
        h += "<h2>Configuration</h2>\n"
        if runs.allSatisfy({ !$0.hasConfig }) {
            h += "<p>No run has a config.json.</p>\n"
        } else {
            let keys = Set(runs.flatMap { $0.config.keys })
            h += table(rows: diff + keys.subtracting(diff).sorted(), names: names, marked: Set(diff)) { runs[$1].config[$0] }
        }

        h += "<h2>Reconstructions</h2>\n"
        for (i, r) in runs.enumerated() {
            if let png = r.reconstructionsPNG {
                h += "<figure><img class=\"pixels\" src=\"\(ReportFormat.dataURI(png, type: "image/png"))\" alt=\"reconstructions of \(esc(names[i]))\"/>"
                h += "<figcaption>\(esc(names[i])): test images (top) and their reconstructions.</figcaption></figure>\n"
            } else {
                h += "<p>\(esc(names[i])): no report/reconstructions.png (run with --no-report?).</p>\n"
            }
        }
        h += "</body>\n</html>\n"
        return h
    }

    /// Keys down, runs across; `marked` rows get class "diff".
    static func table(rows: [String], names: [String], marked: Set<String>, value: (String, Int) -> Any?) -> String {
        let esc = Report.htmlEscape
        var h = "<div class=\"scroll\"><table class=\"kv wide\">\n<tr><th>key</th>"
        for (i, n) in names.enumerated() {
            h += "<th><span class=\"swatch\" style=\"background: \(SVGPlot.palette[i % SVGPlot.palette.count])\"></span>\(esc(n))</th>"
        }
        h += "</tr>\n"
        for k in rows {
            h += marked.contains(k) ? "<tr class=\"diff\">" : "<tr>"
            h += "<th>\(esc(k))</th>"
            for i in names.indices { h += "<td>\(ReportFormat.html(value(k, i)))</td>" }
            h += "</tr>\n"
        }
        return h + "</table></div>\n"
    }
}
