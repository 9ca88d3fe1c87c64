import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Parses an XML document with Foundation's XMLParser and collects its text and elements.
final class XMLCheck: NSObject, XMLParserDelegate {
    var texts: [String] = []
    var elements: [String: Int] = [:]
    var root: String?
    private var current = ""

    struct Result {
        var ok: Bool
        var error: String?
        var texts: [String]
        var elements: [String: Int]
        var root: String?
        var allText: String { texts.joined(separator: "\n") }
    }

    static func parse(_ s: String) -> Result {
        let d = XMLCheck()
        let p = XMLParser(data: Data(s.utf8))
        p.delegate = d
        let ok = p.parse()
        return Result(ok: ok, error: p.parserError.map { "\($0)" }, texts: d.texts, elements: d.elements, root: d.root)
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
        if root == nil { root = elementName }
        elements[elementName, default: 0] += 1
        current = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { current += string }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?) {
        let t = current.trimmingCharacters(in: .whitespacesAndNewlines)
        if !t.isEmpty { texts.append(t) }
        current = ""
    }
}

final class SVGReportTests: XCTestCase {
    func assertWellFormed(_ svg: String, file: StaticString = #filePath, line: UInt = #line) -> XMLCheck.Result {
        let r = XMLCheck.parse(svg)
        XCTAssertTrue(r.ok, "SVG not well formed: \(r.error ?? "?")", file: file, line: line)
        XCTAssertEqual(r.root, "svg", file: file, line: line)
        return r
    }

    func testLinePlotWellFormedWithEscapedLabels() {
        let train: [(x: Double, y: Double)] = (0..<500).map { i -> (x: Double, y: Double) in
            let x = Double(i)
            return (x: x, y: 1 / (x + 1) + 0.01)
        }
        let test: [(x: Double, y: Double)] = [(x: 100.0, y: 0.05), (x: 200.0, y: 0.03), (x: 300.0, y: .nan), (x: 400.0, y: 0.02)]
        for logY in [false, true] {
            let svg = SVGPlot.line(title: "Loss <run \"a\" & b>", xLabel: "step's x", yLabel: "loss & MSE",
                                   series: [.init(name: "train <loss>", points: train),
                                            .init(name: "test MSE", points: test, markers: true)],
                                   logY: logY)
            let r = assertWellFormed(svg)
            XCTAssertTrue(r.texts.contains("Loss <run \"a\" & b>"))
            XCTAssertTrue(r.texts.contains("step's x"))
            XCTAssertTrue(r.texts.contains("loss & MSE"))
            XCTAssertTrue(r.texts.contains("train <loss>"))
            XCTAssertTrue(r.texts.contains("test MSE"))
            XCTAssertGreaterThanOrEqual(r.elements["polyline"] ?? 0, 2, "NaN splits the test series")
            XCTAssertTrue(svg.contains("&lt;run &quot;a&quot; &amp; b&gt;"))
        }
    }

    func testLinePlotThinsVeryLongSeries() {
        let pts: [(x: Double, y: Double)] = (0..<100_000).map { i -> (x: Double, y: Double) in (x: Double(i), y: sin(Double(i) / 500)) }
        let svg = SVGPlot.line(title: "t", xLabel: "x", yLabel: "y", series: [.init(name: "s", points: pts)])
        _ = assertWellFormed(svg)
        XCTAssertLessThan(svg.utf8.count, 60_000)
    }

    func testScatterLegendAndSubsampling() {
        var g = SplitMix64(seed: 3)
        let n = 25_000
        let x = (0..<n).map { _ in Double(g.normal()) }
        let y = (0..<n).map { _ in Double(g.normal()) * 3 }
        let labels = (0..<n).map { _ in Int(g.next() % 10) }
        let names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        let svg = SVGPlot.scatter(title: "PCA projection of the 8-D code", xLabel: "PC1", yLabel: "PC2",
                                  x: x, y: y, labels: labels, classNames: names)
        let r = assertWellFormed(svg)
        for name in names + ["PC1", "PC2", "PCA projection of the 8-D code"] {
            XCTAssertTrue(r.texts.contains(name), "missing \(name)")
        }
        // One dot ("h0" segment) per drawn point, capped at 10,000; ten distinct colours.
        XCTAssertEqual(svg.components(separatedBy: "h0").count - 1, 10_000)
        XCTAssertEqual(Set(SVGPlot.palette).count, 10)
        for c in SVGPlot.palette { XCTAssertTrue(svg.contains("stroke=\"\(c)\""), "colour \(c) unused") }
        XCTAssertLessThan(svg.utf8.count, 250_000)
    }

    func testScatterUnknownLabelsGetLegendEntries() {
        let svg = SVGPlot.scatter(title: "t", xLabel: "x", yLabel: "y", x: [0, 1, 2], y: [0, 1, 2],
                                  labels: [0, 1, 12], classNames: ["zero", "one"])
        let r = assertWellFormed(svg)
        XCTAssertTrue(r.texts.contains("label 12"))
    }

    func testHistogramWithThreshold() {
        var g = SplitMix64(seed: 9)
        let normal = (0..<5_000).map { _ in Double(abs(g.normal())) * 0.01 }
        let anomalous = (0..<500).map { _ in 0.02 + Double(abs(g.normal())) * 0.02 }
        let svg = SVGPlot.histogram(title: "Reconstruction error", xLabel: "per-image MSE",
                                    sets: [.init(name: "normal (test)", values: normal),
                                           .init(name: "anomalous", values: anomalous + [.nan])],
                                    bins: 30, threshold: 0.025, thresholdLabel: "99th percentile")
        let r = assertWellFormed(svg)
        for t in ["Reconstruction error", "per-image MSE", "density", "normal (test)", "anomalous"] {
            XCTAssertTrue(r.texts.contains(t), "missing \(t)")
        }
        XCTAssertTrue(r.texts.contains("99th percentile = 0.025"))
        XCTAssertEqual(r.elements["path"], 2)
        XCTAssertTrue(svg.contains("fill-opacity=\"0.4\""))
        XCTAssertTrue(svg.contains("stroke-dasharray"))
    }

    func testEmptyAndDegenerateInputsStillWellFormed() {
        _ = assertWellFormed(SVGPlot.line(title: "", xLabel: "", yLabel: "", series: []))
        _ = assertWellFormed(SVGPlot.line(title: "one", xLabel: "x", yLabel: "y",
                                          series: [.init(name: "p", points: [(x: 1, y: 1)])], logY: true))
        _ = assertWellFormed(SVGPlot.scatter(title: "none", xLabel: "x", yLabel: "y", x: [], y: [],
                                             labels: [], classNames: ["a"]))
        _ = assertWellFormed(SVGPlot.histogram(title: "h", xLabel: "x", sets: [.init(name: "c", values: [2, 2, 2])]))
    }

    func testNiceTicks() {
        let t = SVGPlot.niceTicks(0.013, 0.97)
        XCTAssertEqual(t.step, 0.2, accuracy: 1e-12)
        Compare.close("ticks", t.ticks, [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol: 1e-12)
        let u = SVGPlot.niceTicks(-37, 1234)
        XCTAssertEqual(u.step, 200)
        XCTAssertEqual(u.lo, -200)
        XCTAssertEqual(u.hi, 1400)
        XCTAssertEqual(SVGPlot.tickLabel(0.4, step: 0.2), "0.4")
        XCTAssertEqual(SVGPlot.tickLabel(1200, step: 200), "1200")
        XCTAssertEqual(SVGPlot.f2(12.346), "12.35")
        XCTAssertEqual(SVGPlot.f2(-0.07), "-0.07")
        XCTAssertEqual(SVGPlot.f2(3.0), "3")
        XCTAssertEqual(SVGPlot.f2(2.5), "2.5")
    }
}

extension SVGReportTests {
    func testLogAxisTicks() {
        // Two decades: ticks at 1, 2, 5 × 10ⁿ inside the data range.
        let wide = SVGPlot.Axis.log(0.012, 1.01)
        XCTAssertEqual(wide.ticks.map(\.label), ["0.02", "0.05", "0.1", "0.2", "0.5", "1"])
        // A narrow range still gets at least three ticks, all inside the domain.
        let narrow = SVGPlot.Axis.log(0.031, 0.036)
        XCTAssertGreaterThanOrEqual(narrow.ticks.count, 3)
        for t in narrow.ticks {
            XCTAssertGreaterThanOrEqual(narrow.unit(t.value), -1e-9)
            XCTAssertLessThanOrEqual(narrow.unit(t.value), 1 + 1e-9)
        }
        // Values map monotonically to [0, 1].
        XCTAssertEqual(wide.unit(0.012), 0.04 / 1.08, accuracy: 1e-9)
        XCTAssertLessThan(wide.unit(0.1), wide.unit(0.5))
    }
}
