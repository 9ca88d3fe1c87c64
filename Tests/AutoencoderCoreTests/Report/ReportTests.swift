import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

final class ReportTests: XCTestCase {
    static let classNames = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("report-test-\(UUID().uuidString)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    static func image(_ g: inout SplitMix64) -> [Float] { (0..<784).map { _ in g.nextFloat() } }

    static func inputs(codeDim: Int, denoising: Bool, generative: Bool,
                       ae: Double? = 0.012, pca: Double? = 0.019) -> ReportInputs {
        var g = SplitMix64(seed: 17)
        let originals = (0..<10).map { _ in image(&g) }
        let n = 600
        var codes: [Float] = []
        var labels: [UInt8] = []
        for i in 0..<n {
            let c = i % 10
            labels.append(UInt8(c))
            for j in 0..<codeDim { codes.append(Float(c) * (j == 0 ? 1 : 0.3) + g.normal() * 0.4) }
        }
        return ReportInputs(
            title: "Run <demo> & \"test\"",
            config: [(key: "model", value: "mlp3"), (key: "note", value: "<b>not bold</b>"), (key: "lr", value: 0.001)],
            summary: [(key: "test_mse", value: 0.0123456), (key: "epochs", value: 3),
                      (key: "odd<&>key", value: "<script>alert(1)</script>"), (key: "samples_per_second", value: 74997.3),
                      (key: "wall_seconds", value: 12.34), (key: "world_size", value: 2), (key: "stop_reason", value: "early_stop"),
                      (key: "ms_per_step", value: ["forward": 0.59312, "backward": 0.957]),
                      (key: "checkpoint", value: "/a/very/long/path/" + String(repeating: "segment_", count: 40) + "step-00004690.safetensors")],
            classNames: classNames,
            originals: originals,
            reconstructions: originals.map { $0.map { $0 * 0.9 } },
            noisy: denoising ? originals.map { $0.map { min(1, $0 + 0.2) } } : nil,
            codes: codes, codeDim: codeDim, codeLabels: labels,
            trainLoss: (1...300).map { (step: $0, loss: 0.1 / Double($0).squareRoot()) },
            testMSE: [(step: 100, mse: 0.02), (step: 200, mse: 0.015), (step: 300, mse: 0.012)],
            samples: generative ? (0..<25).map { _ in image(&g) } : nil,
            manifold: generative ? (0..<5).map { _ in (0..<5).map { _ in image(&g) } } : nil,
            aeTestMSE: ae, pcaTestMSE: pca, pcaComponents: ae == nil ? nil : codeDim, meanImageTestMSE: 0.0675)
    }

    /// Every src/href value in the page.
    static func links(_ html: String) throws -> [String] {
        let re = try NSRegularExpression(pattern: #"(?:src|href)\s*=\s*["']([^"']*)["']"#, options: [.caseInsensitive])
        let ns = html as NSString
        return re.matches(in: html, range: NSRange(location: 0, length: ns.length)).map {
            ns.substring(with: $0.range(at: 1))
        }
    }

    func pngSize(_ url: URL) throws -> (width: Int, height: Int) {
        let img = try PNGDecode.parse(try Data(contentsOf: url))
        return (img.width, img.height)
    }

    func testFullReportWritesEveryFileAndLinksResolve() throws {
        let files = try Report.write(Self.inputs(codeDim: 3, denoising: true, generative: true), to: dir)
        XCTAssertEqual(files, ["reconstructions.png", "latent.svg", "loss.svg", "samples.png", "manifold.png", "report.html"])
        for f in files {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(f).path), f)
        }
        for f in files where f.hasSuffix(".png") {
            let data = try Data(contentsOf: dir.appendingPathComponent(f))
            XCTAssertEqual([UInt8](data.prefix(8)), PNG.signature, f)
            XCTAssertNoThrow(try PNGDecode.parse(data), f)
        }
        var svgText: [String: String] = [:]
        for f in files where f.hasSuffix(".svg") {
            let s = try String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8)
            let r = XMLCheck.parse(s)
            XCTAssertTrue(r.ok, "\(f): \(r.error ?? "")")
            svgText[f] = r.allText
        }
        XCTAssertTrue(svgText["latent.svg"]!.contains("PCA projection of the 3-D code"))
        XCTAssertTrue(svgText["latent.svg"]!.contains("PC1 of the 3-D code"))
        for name in Self.classNames { XCTAssertTrue(svgText["latent.svg"]!.contains(name)) }
        XCTAssertTrue(svgText["loss.svg"]!.contains("training step"))
        XCTAssertTrue(svgText["loss.svg"]!.contains("train loss (per logged step)"))
        XCTAssertTrue(svgText["loss.svg"]!.contains("test MSE (per epoch)"))

        // Denoising: three rows of 28×3 px images with 2 px gaps; samples in rows of 10.
        let recon = try pngSize(dir.appendingPathComponent("reconstructions.png"))
        XCTAssertEqual(recon.height, 3 * 84 + 4 * 2)
        XCTAssertEqual(recon.width, 10 * 84 + 11 * 2)
        XCTAssertEqual(try pngSize(dir.appendingPathComponent("samples.png")).height, 3 * 84 + 4 * 2)

        let html = try String(contentsOf: dir.appendingPathComponent("report.html"), encoding: .utf8)
        let links = try Self.links(html)
        XCTAssertEqual(Set(links), ["reconstructions.png", "latent.svg", "loss.svg", "samples.png", "manifold.png"])
        for l in links where !l.contains(":") && !l.hasPrefix("#") {
            // Resolve like a browser: relative to the page's own URL.
            let page = dir.appendingPathComponent("report.html")
            let target = try XCTUnwrap(URL(string: l, relativeTo: page)).standardizedFileURL
            XCTAssertTrue(target.isFileURL)
            XCTAssertTrue(FileManager.default.fileExists(atPath: target.path), "link \(l) does not resolve")
        }
        // Summary keys and values, rounded and escaped; nested values as a small table; the
        // config as a snake_case table; title escaped.
        XCTAssertTrue(html.contains("<th>test_mse</th><td>0.01235</td>"), "numbers are rounded to 4 significant digits")
        XCTAssertTrue(html.contains("<th>samples_per_second</th><td>74,997</td>"))
        XCTAssertTrue(html.contains("<th>epochs</th><td>3</td>"))
        XCTAssertTrue(html.contains("<th>ms_per_step</th><td><table class=\"sub\"><tr><th>backward</th><td>0.957</td></tr><tr><th>forward</th><td>0.5931</td></tr></table></td>"))
        XCTAssertTrue(html.contains("odd&lt;&amp;&gt;key"))
        XCTAssertTrue(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        XCTAssertFalse(html.contains("<script"))
        XCTAssertFalse(html.contains("<b>not bold</b>"))
        XCTAssertTrue(html.contains("<th>note</th><td>&lt;b&gt;not bold&lt;/b&gt;</td>"))
        XCTAssertTrue(html.contains("<th>lr</th><td>0.001</td>"))
        XCTAssertTrue(html.contains("<title>Run &lt;demo&gt; &amp; &quot;test&quot;</title>"))
        XCTAssertTrue(html.contains("PCA baseline"))
        XCTAssertTrue(html.contains("The autoencoder is better"))
        XCTAssertTrue(html.contains("PCA, 3 components"))
        XCTAssertTrue(html.contains("noisy inputs"))
        // The page leads with the answer: the headline (test MSE, baselines, speed, time, ranks)
        // comes before the figures, then the summary table, then the configuration.
        let order = ["class=\"headline\"", "test MSE (per pixel)", "mean image", "stopped by", "training samples/s", "12.3 s",
                     "ranks", "reconstructions.png", "loss.svg", "<h2>Summary</h2>", "<h2>Configuration</h2>"]
        let positions = order.map { html.range(of: $0)?.lowerBound }
        for (k, p) in zip(order, positions) { XCTAssertNotNil(p, "report lacks \(k)") }
        let found = positions.compactMap { $0 }
        XCTAssertEqual(found, found.sorted(), "the report's parts are out of order")
        XCTAssertTrue(html.contains("<span class=\"value\">0.01200</span>") || html.contains("<span class=\"value\">0.012</span>"), "headline test MSE")
        XCTAssertTrue(html.contains("than the mean image") || html.contains("Against the mean image"))
    }

    func testMinimalReportOneDimensionalCode() throws {
        let inputs = Self.inputs(codeDim: 1, denoising: false, generative: false, ae: nil, pca: nil)
        let files = try Report.write(inputs, to: dir)
        XCTAssertEqual(files, ["reconstructions.png", "latent.svg", "loss.svg", "report.html"])
        XCTAssertEqual(try pngSize(dir.appendingPathComponent("reconstructions.png")).height, 2 * 84 + 3 * 2)
        let latent = XMLCheck.parse(try String(contentsOf: dir.appendingPathComponent("latent.svg"), encoding: .utf8))
        XCTAssertTrue(latent.ok)
        XCTAssertTrue(latent.allText.contains("jitter"))
        let html = try String(contentsOf: dir.appendingPathComponent("report.html"), encoding: .utf8)
        XCTAssertFalse(html.contains("samples.png"))
        XCTAssertTrue(html.contains("not computed"))
        for l in try Self.links(html) {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(l).path), l)
        }
    }

    func testTwoDimensionalCodeDrawnAsIsAndPCAVerdict() throws {
        let inputs = Self.inputs(codeDim: 2, denoising: false, generative: false, ae: 0.03, pca: 0.02)
        _ = try Report.write(inputs, to: dir)
        let latent = XMLCheck.parse(try String(contentsOf: dir.appendingPathComponent("latent.svg"), encoding: .utf8))
        XCTAssertTrue(latent.ok)
        XCTAssertTrue(latent.allText.contains("2-D latent code"))
        XCTAssertFalse(latent.allText.contains("PCA"))
        let html = try String(contentsOf: dir.appendingPathComponent("report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("PCA is better"))
    }

    func testNonFiniteCodesAndLossesDoNotBreakTheReport() throws {
        var inputs = Self.inputs(codeDim: 4, denoising: false, generative: false)
        inputs.codes[5] = .nan
        inputs.codes[9] = .infinity
        inputs.trainLoss[10].loss = .nan
        inputs.aeTestMSE = .nan
        _ = try Report.write(inputs, to: dir)
        for f in ["latent.svg", "loss.svg"] {
            let r = XMLCheck.parse(try String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8))
            XCTAssertTrue(r.ok, f)
        }
        let latent = try String(contentsOf: dir.appendingPathComponent("latent.svg"), encoding: .utf8)
        XCTAssertTrue(latent.contains("PCA projection of the 4-D code"))
        XCTAssertEqual(latent.components(separatedBy: "h0").count - 1, 600 - 2)
        let html = try String(contentsOf: dir.appendingPathComponent("report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("not finite"))
    }

    func testRewritingIntoAnExistingDirectoryAndBadImagesThrow() throws {
        _ = try Report.write(Self.inputs(codeDim: 2, denoising: false, generative: false), to: dir)
        _ = try Report.write(Self.inputs(codeDim: 2, denoising: false, generative: false), to: dir)
        var bad = Self.inputs(codeDim: 2, denoising: false, generative: false)
        bad.originals[0] = [Float](repeating: 0, count: 783)
        XCTAssertThrowsError(try Report.write(bad, to: dir))
    }

    /// Renders the page in headless Chromium (Launch/test.sh installs the Debian package; a
    /// missing browser fails the test): at 1280 px the page is no wider than the window (the
    /// long checkpoint path wraps, the nested ms_per_step table fits), every image loads, and
    /// the screenshot carries much more than a blank page's.
    func testHeadlessBrowserRendering() throws {
        _ = try Report.write(Self.inputs(codeDim: 3, denoising: true, generative: true), to: dir)
        let page = dir.appendingPathComponent("report.html")
        let r = try BrowserCheck.check(page, width: 1280)
        XCTAssertEqual(r.innerWidth, 1280)
        XCTAssertFalse(r.overflows, "report.html is \(r.scrollWidth) px wide at a 1280 px window")
        XCTAssertEqual(r.scrolledBoxes, 0, "a table scrolls sideways at 1280 px (the long path must wrap)")
        XCTAssertEqual(r.images.count, 5, "\(r.images.map(\.src))")
        XCTAssertEqual(r.brokenImages, [], "images that did not load")
        // At a phone's width the page still fits (figures scale down, the two columns stack).
        let narrow = try BrowserCheck.check(page, width: 480)
        XCTAssertFalse(narrow.overflows, "report.html is \(narrow.scrollWidth) px wide at a 480 px window")

        let blank = dir.appendingPathComponent("blank.html")
        try Data("<!DOCTYPE html><html><body></body></html>".utf8).write(to: blank)
        let b = dir.appendingPathComponent("blank-shot.png"), s = dir.appendingPathComponent("report-shot.png")
        try BrowserCheck.screenshot(blank, to: b, width: 1280, height: 2400)
        try BrowserCheck.screenshot(page, to: s, width: 1280, height: 2400)
        let bs = (try? Data(contentsOf: b).count) ?? 0, rs = (try? Data(contentsOf: s).count) ?? 0
        guard bs > 0 else { throw TestFailure("the browser produced no screenshot of a blank page") }
        XCTAssertGreaterThan(rs, 3 * bs, "report screenshot looks blank")
    }
}
