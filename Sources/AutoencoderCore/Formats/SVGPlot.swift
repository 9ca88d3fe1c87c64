import Foundation

/// A small self-contained SVG plotting module: line plots, class-coloured scatter plots and
/// overlaid histograms, each a standalone, well-formed SVG document with a title, a frame,
/// "nice" ticks with labels, axis labels and a legend. All text is XML-escaped; coordinates are
/// written with at most two decimals to keep files small.
public enum SVGPlot {
    /// Ten distinct colours (the Tableau 10 palette), used for series and classes in order.
    public static let palette: [String] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]

    /// One named line series. Non-finite points (and, on a log axis, y <= 0) break the line.
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        /// CSS colour; nil picks the palette colour for the series' position.
        public var color: String?
        /// Draws a dot at every point (for sparse series such as one value per epoch).
        public var markers: Bool
        public var dashed: Bool

        public init(name: String, points: [(x: Double, y: Double)], color: String? = nil,
                    markers: Bool = false, dashed: Bool = false) {
            self.name = name
            self.points = points
            self.color = color
            self.markers = markers
            self.dashed = dashed
        }
    }

    /// One named set of scores for `histogram`.
    public struct ScoreSet {
        public var name: String
        public var values: [Double]
        public var color: String?

        public init(name: String, values: [Double], color: String? = nil) {
            self.name = name
            self.values = values
            self.color = color
        }
    }

    // MARK: - Line plot

    /// A line plot of several named series sharing one pair of axes (optionally log-scaled y).
    public static func line(title: String, xLabel: String, yLabel: String, series: [Series],
                            logY: Bool = false, width: Int = 720, height: Int = 440) -> String {
        var xs: [Double] = [], ys: [Double] = []
        for s in series {
            for p in s.points where p.x.isFinite && p.y.isFinite && (!logY || p.y > 0) {
                xs.append(p.x)
                ys.append(p.y)
            }
        }
        let legend = series.enumerated().map { i, s in
            LegendEntry(name: s.name, color: s.color ?? palette[i % palette.count],
                        kind: s.markers ? .lineMarker(dashed: s.dashed) : .line(dashed: s.dashed))
        }
        var c = Canvas(width: width, height: height, legend: legend, inside: true)
        let xAxis = Axis.linear(xs.min(), xs.max())
        let yAxis = logY ? Axis.log(ys.min(), ys.max()) : Axis.linear(ys.min(), ys.max())
        c.frame(title: title, xLabel: xLabel, yLabel: yLabel, x: xAxis, y: yAxis)

        for (i, s) in series.enumerated() {
            let color = s.color ?? palette[i % palette.count]
            // Split at unusable points, then thin very dense runs to a per-pixel min/max envelope.
            var runs: [[(Double, Double)]] = [[]]
            for p in s.points {
                if p.x.isFinite && p.y.isFinite && (!logY || p.y > 0) {
                    runs[runs.count - 1].append((c.px(xAxis, p.x), c.py(yAxis, p.y)))
                } else if !runs[runs.count - 1].isEmpty {
                    runs.append([])
                }
            }
            let dash = s.dashed ? " stroke-dasharray=\"6 4\"" : ""
            for run in runs where !run.isEmpty {
                let pts = thin(run)
                if pts.count >= 2 {
                    var d = ""
                    d.reserveCapacity(pts.count * 14)
                    for (x, y) in pts {
                        if !d.isEmpty { d += " " }
                        d += f2(x) + "," + f2(y)
                    }
                    c.out += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.6\" stroke-linejoin=\"round\"\(dash) points=\"\(d)\"/>\n"
                }
                if s.markers || pts.count == 1 {
                    c.out += "<g fill=\"\(color)\">"
                    for (x, y) in run {
                        c.out += "<circle cx=\"\(f2(x))\" cy=\"\(f2(y))\" r=\"3\"/>"
                    }
                    c.out += "</g>\n"
                }
            }
        }
        c.legend()
        return c.finish()
    }

    // MARK: - Scatter plot

    /// A scatter plot of 2-D points coloured by integer label (`labels[i]` indexes `classNames`
    /// and the palette), with a legend of class names. More than `maxPoints` points are
    /// subsampled evenly (deterministically); non-finite points are skipped.
    public static func scatter(title: String, xLabel: String, yLabel: String,
                               x: [Double], y: [Double], labels: [Int], classNames: [String],
                               maxPoints: Int = 10_000, width: Int = 680, height: Int = 560) -> String {
        let n = min(x.count, y.count, labels.count)
        var idx: [Int]
        if n > maxPoints && maxPoints > 0 {
            idx = (0..<maxPoints).map { Int((Int64($0) * Int64(n)) / Int64(maxPoints)) }
        } else {
            idx = Array(0..<n)
        }
        idx = idx.filter { x[$0].isFinite && y[$0].isFinite }
        let xs = idx.map { x[$0] }, ys = idx.map { y[$0] }

        // Every class name gets a legend entry; labels outside classNames get "label N" entries.
        var classes = Array(0..<classNames.count)
        classes += Set(idx.map { labels[$0] }).filter { $0 < 0 || $0 >= classNames.count }.sorted()
        func name(_ l: Int) -> String { l >= 0 && l < classNames.count ? classNames[l] : "label \(l)" }
        func color(_ l: Int) -> String { palette[((l % palette.count) + palette.count) % palette.count] }

        let legend = classes.map { LegendEntry(name: name($0), color: color($0), kind: .dot) }
        var c = Canvas(width: width, height: height, legend: legend)
        let xAxis = Axis.linear(xs.min(), xs.max())
        let yAxis = Axis.linear(ys.min(), ys.max())
        c.frame(title: title, xLabel: xLabel, yLabel: yLabel, x: xAxis, y: yAxis)

        // One path per class; each point is a zero-length segment drawn with a round cap (a dot),
        // about 16 bytes per point.
        var byClass: [Int: String] = [:]
        for (j, i) in idx.enumerated() {
            byClass[labels[i], default: ""] += "M" + f2(c.px(xAxis, xs[j])) + " " + f2(c.py(yAxis, ys[j])) + "h0"
        }
        for l in classes {
            guard let d = byClass[l], !d.isEmpty else { continue }
            c.out += "<path fill=\"none\" stroke=\"\(color(l))\" stroke-opacity=\"0.75\" stroke-width=\"3.4\" stroke-linecap=\"round\" d=\"\(d)\"/>\n"
        }
        c.legend()
        return c.finish()
    }

    // MARK: - Histogram

    /// Overlaid, semi-transparent histograms of several score sets on shared bins, with an
    /// optional vertical threshold line. With `density` each set is normalised to unit area, so
    /// sets of very different sizes compare well; otherwise bars are counts.
    public static func histogram(title: String, xLabel: String, yLabel: String? = nil,
                                 sets: [ScoreSet], bins: Int = 40, density: Bool = true,
                                 threshold: Double? = nil, thresholdLabel: String = "threshold",
                                 width: Int = 720, height: Int = 440) -> String {
        let nb = max(1, bins)
        let all = sets.flatMap { $0.values.filter(\.isFinite) }
        var lo = all.min() ?? 0, hi = all.max() ?? 1
        if let t = threshold, t.isFinite { lo = min(lo, t); hi = max(hi, t) }
        if !(hi > lo) { lo -= 0.5; hi += 0.5 }
        let bw = (hi - lo) / Double(nb)

        var heights: [[Double]] = []
        for s in sets {
            var counts = [Double](repeating: 0, count: nb)
            var total = 0.0
            for v in s.values where v.isFinite {
                let b = min(nb - 1, max(0, Int((v - lo) / bw)))
                counts[b] += 1
                total += 1
            }
            if density && total > 0 { counts = counts.map { $0 / (total * bw) } }
            heights.append(counts)
        }
        let ymax = heights.flatMap { $0 }.max() ?? 1

        var legend = sets.enumerated().map { i, s in
            LegendEntry(name: s.name, color: s.color ?? palette[i % palette.count], kind: .box)
        }
        if let t = threshold, t.isFinite {
            legend.append(LegendEntry(name: "\(thresholdLabel) = \(String(format: "%.4g", t))",
                                      color: "#000000", kind: .line(dashed: true)))
        }
        var c = Canvas(width: width, height: height, legend: legend, inside: true)
        let xAxis = Axis.linear(lo, hi)
        let yAxis = Axis.linear(0, ymax > 0 ? ymax : 1)
        c.frame(title: title, xLabel: xLabel, yLabel: yLabel ?? (density ? "density" : "count"),
                x: xAxis, y: yAxis)

        let base = c.py(yAxis, 0)
        for (i, s) in sets.enumerated() {
            let color = s.color ?? palette[i % palette.count]
            let h = heights[i]
            var d = "M" + f2(c.px(xAxis, lo)) + " " + f2(base)
            for b in 0..<nb {
                let x0 = c.px(xAxis, lo + Double(b) * bw), x1 = c.px(xAxis, lo + Double(b + 1) * bw)
                let y = f2(c.py(yAxis, h[b]))
                d += "L" + f2(x0) + " " + y + "L" + f2(x1) + " " + y
            }
            d += "L" + f2(c.px(xAxis, hi)) + " " + f2(base) + "Z"
            c.out += "<path fill=\"\(color)\" fill-opacity=\"0.4\" stroke=\"\(color)\" stroke-width=\"1.2\" d=\"\(d)\"/>\n"
        }
        if let t = threshold, t.isFinite {
            let x = f2(c.px(xAxis, t))
            c.out += "<line x1=\"\(x)\" y1=\"\(f2(c.plotTop))\" x2=\"\(x)\" y2=\"\(f2(c.plotBottom))\" stroke=\"#000000\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n"
        }
        c.legend()
        return c.finish()
    }

    // MARK: - Text helpers

    /// Escapes text for XML content and attribute values, dropping characters XML 1.0 forbids.
    public static func xmlEscape(_ s: String) -> String {
        var r = ""
        r.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            switch u {
            case "&": r += "&amp;"
            case "<": r += "&lt;"
            case ">": r += "&gt;"
            case "\"": r += "&quot;"
            case "'": r += "&apos;"
            default:
                let v = u.value
                if v < 0x20 && v != 0x09 && v != 0x0A && v != 0x0D { continue }
                if v == 0xFFFE || v == 0xFFFF { continue }
                r.unicodeScalars.append(u)
            }
        }
        return r
    }

    /// A coordinate with at most two decimals, trailing zeros dropped ("12.5", "3", "-0.07").
    static func f2(_ v: Double) -> String {
        let c = max(-1e9, min(1e9, v.isFinite ? v : 0))
        let r = Int64((c * 100).rounded())
        let neg = r < 0
        let a = neg ? -r : r
        let ip = a / 100, fp = Int(a % 100)
        var s = neg ? "-" : ""
        s += String(ip)
        if fp != 0 {
            s += "."
            s += String(fp / 10)
            if fp % 10 != 0 { s += String(fp % 10) }
        }
        return s
    }

    /// "Nice" tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten,
    /// about `target` of them. Returns the widened domain and the ticks.
    public static func niceTicks(_ lo: Double, _ hi: Double, target: Int = 6)
        -> (lo: Double, hi: Double, step: Double, ticks: [Double]) {
        var a = lo, b = hi
        if !(a.isFinite && b.isFinite) { a = 0; b = 1 }
        if a > b { swap(&a, &b) }
        if b - a < 1e-12 * max(1, abs(a)) {
            let pad = a == 0 ? 1 : abs(a) * 0.1
            a -= pad
            b += pad
        }
        let raw = (b - a) / Double(max(1, target))
        let mag = pow(10, floor(log10(raw)))
        let res = raw / mag
        let step = (res < 1.5 ? 1 : res < 3 ? 2 : res < 7 ? 5 : 10) * mag
        let nlo = floor(a / step + 1e-9) * step
        let nhi = ceil(b / step - 1e-9) * step
        var ticks: [Double] = []
        var k = 0
        while true {
            var t = nlo + Double(k) * step
            if t > nhi + step * 1e-6 { break }
            if abs(t) < step * 1e-9 { t = 0 }
            ticks.append(t)
            k += 1
            if k > 1000 { break }
        }
        return (nlo, nhi, step, ticks)
    }

    static func tickLabel(_ v: Double, step: Double) -> String {
        if v == 0 { return "0" }
        let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
        if decimals > 4 || abs(v) >= 1e6 { return String(format: "%g", v) }
        return String(format: "%.\(decimals)f", v)
    }

    // MARK: - Axes and canvas

    struct Axis {
        var lo: Double, hi: Double  // domain (log10 units when isLog)
        var ticks: [(value: Double, label: String)]
        var isLog: Bool

        static func linear(_ mn: Double?, _ mx: Double?) -> Axis {
            let t = niceTicks(mn ?? 0, mx ?? 1)
            return Axis(lo: t.lo, hi: t.hi, ticks: t.ticks.map { ($0, tickLabel($0, step: t.step)) }, isLog: false)
        }

        /// Log-scaled axis: the domain is the data range (in log10 units) plus 4% on each side;
        /// ticks at 1·10ⁿ (wide ranges), 1, 2, 5·10ⁿ, or 1…9·10ⁿ, or linear nice ticks when the
        /// range is too narrow to hold three of those.
        static func log(_ mn: Double?, _ mx: Double?) -> Axis {
            var a = Foundation.log10(mn ?? 1), b = Foundation.log10(mx ?? 10)
            if !(a.isFinite && b.isFinite) { a = 0; b = 1 }
            if b - a < 1e-9 { a -= 0.5; b += 0.5 }
            let lo = a - 0.04 * (b - a), hi = b + 0.04 * (b - a)
            let decades = hi - lo
            let mults: [Double] = decades > 4 ? [1] : decades > 1.5 ? [1, 2, 5] : [1, 2, 3, 4, 5, 6, 7, 8, 9]
            var ticks: [(Double, String)] = []
            var e = floor(lo)
            while e <= ceil(hi) {
                for m in mults {
                    let v = m * pow(10, e)
                    let lv = Foundation.log10(v)
                    if lv >= lo - 1e-9 && lv <= hi + 1e-9 { ticks.append((v, String(format: "%g", v))) }
                }
                e += 1
            }
            if decades > 4 && ticks.count > 10 {  // very wide: every other decade
                ticks = ticks.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
            }
            if ticks.count < 3 {
                let t = niceTicks(pow(10, lo), pow(10, hi), target: 4)
                ticks = t.ticks.filter { $0 > 0 && Foundation.log10($0) >= lo - 1e-9 && Foundation.log10($0) <= hi + 1e-9 }
                    .map { ($0, tickLabel($0, step: t.step)) }
            }
            return Axis(lo: lo, hi: hi, ticks: ticks, isLog: true)
        }

        func unit(_ v: Double) -> Double {
            let u = isLog ? Foundation.log10(v) : v
            return (u - lo) / (hi - lo)
        }
    }

    enum LegendKind { case line(dashed: Bool), lineMarker(dashed: Bool), dot, box }

    struct LegendEntry {
        var name: String
        var color: String
        var kind: LegendKind
    }

    struct Canvas {
        let width: Int, height: Int
        let legendEntries: [LegendEntry]
        let legendWidth: Double
        /// The legend sits in a boxed panel in the plot's top-right corner instead of to the
        /// right of the plot.
        let legendInside: Bool
        let plotLeft: Double, plotRight: Double, plotTop: Double, plotBottom: Double
        var out = ""

        init(width: Int, height: Int, legend: [LegendEntry], inside: Bool = false) {
            self.width = width
            self.height = height
            self.legendEntries = legend
            let maxChars = legend.map { $0.name.count }.max() ?? 0
            legendWidth = legend.isEmpty ? 0 : 40 + 7.2 * Double(min(maxChars, 28))
            plotLeft = 74
            // Inside only when the panel takes at most half of the plot's width.
            legendInside = inside && legendWidth <= 0.5 * (Double(width) - 100)
            plotRight = Double(width) - 26 - (legendInside ? 0 : legendWidth)
            plotTop = 40
            plotBottom = Double(height) - 52
            out.reserveCapacity(16_384)
            out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
            out += "<rect x=\"0\" y=\"0\" width=\"\(width)\" height=\"\(height)\" fill=\"#ffffff\"/>\n"
        }

        func px(_ a: Axis, _ v: Double) -> Double { plotLeft + a.unit(v) * (plotRight - plotLeft) }
        func py(_ a: Axis, _ v: Double) -> Double { plotBottom - a.unit(v) * (plotBottom - plotTop) }

        mutating func frame(title: String, xLabel: String, yLabel: String, x: Axis, y: Axis) {
            let cx = (plotLeft + plotRight) / 2, cy = (plotTop + plotBottom) / 2
            out += "<text x=\"\(f2(Double(width) / 2))\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\(xmlEscape(title))</text>\n"
            // Grid lines and tick labels.
            // Vertical lines at the x ticks from y0 to y1, horizontal ones at the y ticks from x0 to x1.
            func tickLines(y0: Double, y1: Double, x0: Double, x1: Double) {
                for t in x.ticks {
                    let p = f2(px(x, t.value))
                    out += "<line x1=\"\(p)\" y1=\"\(f2(y0))\" x2=\"\(p)\" y2=\"\(f2(y1))\"/>"
                }
                for t in y.ticks {
                    let p = f2(py(y, t.value))
                    out += "<line x1=\"\(f2(x0))\" y1=\"\(p)\" x2=\"\(f2(x1))\" y2=\"\(p)\"/>"
                }
            }
            out += "<g stroke=\"#e4e4e4\" stroke-width=\"1\">"
            tickLines(y0: plotTop, y1: plotBottom, x0: plotLeft, x1: plotRight)
            out += "</g>\n<g stroke=\"#333333\" stroke-width=\"1\">"
            tickLines(y0: plotBottom, y1: plotBottom + 5, x0: plotLeft - 5, x1: plotLeft)
            out += "</g>\n<g fill=\"#222222\" font-size=\"11\">"
            for t in x.ticks {
                out += "<text x=\"\(f2(px(x, t.value)))\" y=\"\(f2(plotBottom + 18))\" text-anchor=\"middle\">\(xmlEscape(t.label))</text>"
            }
            for t in y.ticks {
                out += "<text x=\"\(f2(plotLeft - 8))\" y=\"\(f2(py(y, t.value)))\" dy=\"0.35em\" text-anchor=\"end\">\(xmlEscape(t.label))</text>"
            }
            out += "</g>\n"
            out += "<rect x=\"\(f2(plotLeft))\" y=\"\(f2(plotTop))\" width=\"\(f2(plotRight - plotLeft))\" height=\"\(f2(plotBottom - plotTop))\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n"
            out += "<text x=\"\(f2(cx))\" y=\"\(f2(Double(height) - 12))\" text-anchor=\"middle\" font-size=\"13\">\(xmlEscape(xLabel))</text>\n"
            out += "<text transform=\"translate(18,\(f2(cy))) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">\(xmlEscape(yLabel))</text>\n"
        }

        mutating func legend() {
            guard !legendEntries.isEmpty else { return }
            let x0 = legendInside ? plotRight - legendWidth + 2 : plotRight + 14
            var y = plotTop + (legendInside ? 14 : 8)
            if legendInside {
                let h = Double(19 * legendEntries.count) + 8
                out += "<rect x=\"\(f2(x0 - 8))\" y=\"\(f2(plotTop + 6))\" width=\"\(f2(legendWidth - 2))\" height=\"\(f2(h))\" fill=\"#ffffff\" fill-opacity=\"0.85\" stroke=\"#bbbbbb\" stroke-width=\"1\"/>\n"
            }
            out += "<g font-size=\"12\">"
            for e in legendEntries {
                switch e.kind {
                case .line(let dashed), .lineMarker(let dashed):
                    let dash = dashed ? " stroke-dasharray=\"5 3\"" : ""
                    out += "<line x1=\"\(f2(x0))\" y1=\"\(f2(y))\" x2=\"\(f2(x0 + 20))\" y2=\"\(f2(y))\" stroke=\"\(e.color)\" stroke-width=\"2\"\(dash)/>"
                    if case .lineMarker = e.kind {
                        out += "<circle cx=\"\(f2(x0 + 10))\" cy=\"\(f2(y))\" r=\"3\" fill=\"\(e.color)\"/>"
                    }
                case .dot:
                    out += "<circle cx=\"\(f2(x0 + 10))\" cy=\"\(f2(y))\" r=\"4.5\" fill=\"\(e.color)\"/>"
                case .box:
                    out += "<rect x=\"\(f2(x0 + 2))\" y=\"\(f2(y - 6))\" width=\"16\" height=\"12\" fill=\"\(e.color)\" fill-opacity=\"0.4\" stroke=\"\(e.color)\"/>"
                }
                var name = e.name
                if name.count > 28 { name = String(name.prefix(27)) + "…" }
                out += "<text x=\"\(f2(x0 + 26))\" y=\"\(f2(y))\" dy=\"0.35em\">\(xmlEscape(name))</text>"
                y += 19
            }
            out += "</g>\n"
        }

        mutating func finish() -> String {
            out += "</svg>\n"
            return out
        }
    }

    /// Thins a long run of pixel-space points to a per-pixel-column min/max envelope.
    static func thin(_ pts: [(Double, Double)]) -> [(Double, Double)] {
        guard pts.count > 2_000 else { return pts }
        var out: [(Double, Double)] = []
        var i = 0
        while i < pts.count {
            let col = pts[i].0.rounded(.down)
            var j = i, iMin = i, iMax = i
            while j < pts.count && pts[j].0.rounded(.down) == col {
                if pts[j].1 < pts[iMin].1 { iMin = j }
                if pts[j].1 > pts[iMax].1 { iMax = j }
                j += 1
            }
            for k in Set([i, iMin, iMax, j - 1]).sorted() { out.append(pts[k]) }
            i = j
        }
        return out
    }
}
