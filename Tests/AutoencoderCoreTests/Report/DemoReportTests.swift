import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Writes a report from real Fashion-MNIST files (the Debian package), with PCA standing in for a
/// trained autoencoder, and checks what it wrote. By default it uses the first 10,000 training
/// images and writes into a temporary folder; to write the full demo report somewhere to look at,
/// set AETRAIN_REPORT_DEMO to the output folder (and AETRAIN_DEMO_DATA to another folder with the
/// four idx .gz files). gzip must be installed.
final class DemoReportTests: XCTestCase {
    static func gunzip(_ url: URL) throws -> [UInt8] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["gzip", "-dc", url.path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw AETError.data("\(url.path): gzip failed") }
        return [UInt8](data)
    }

    static func load(_ dir: URL, _ split: String, limit: Int = .max) throws -> (images: [UInt8], labels: [UInt8], n: Int) {
        let img = try gunzip(dir.appendingPathComponent("\(split)-images-idx3-ubyte.gz"))
        let lab = try gunzip(dir.appendingPathComponent("\(split)-labels-idx1-ubyte.gz"))
        let n = min(lab.count - 8, limit)
        guard img.count >= 16 + n * 784 else { throw TestFailure("\(dir.path): \(split) images shorter than their labels") }
        return (Array(img[16..<(16 + n * 784)]), Array(lab[8..<(8 + n)]), n)
    }

    func testWriteDemoReport() throws {
        let env = ProcessInfo.processInfo.environment
        let demo = env["AETRAIN_REPORT_DEMO"]
        let dataPath = try env["AETRAIN_DEMO_DATA"] ?? TestFiles.fashionDir()
        let outPath = try demo ?? TestFiles.tempDir(self, "demo")
        let data = URL(fileURLWithPath: dataPath)
        let train = try Self.load(data, "train", limit: demo == nil ? 10_000 : .max), test = try Self.load(data, "t10k")
        let d = 784
        let fashion = dataPath.lowercased().contains("fashion")
        let classNames = fashion
            ? ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
            : (0..<10).map { "digit \($0)" }

        var t0 = Date()
        let pca32 = try train.images.withUnsafeBufferPointer {
            try PCA.fit(images: $0.baseAddress!, count: train.n, dim: d, components: 32)
        }
        let fitSeconds = Date().timeIntervalSince(t0)
        t0 = Date()
        let pcaMSE = test.images.withUnsafeBufferPointer {
            pca32.meanSquaredError(images: $0.baseAddress!, count: test.n, dim: d)
        }
        let mseSeconds = Date().timeIntervalSince(t0)
        let pca64 = try train.images.withUnsafeBufferPointer {
            try PCA.fit(images: $0.baseAddress!, count: train.n, dim: d, components: 64)
        }
        let ae64MSE = test.images.withUnsafeBufferPointer {
            pca64.meanSquaredError(images: $0.baseAddress!, count: test.n, dim: d)
        }
        print("demo: PCA fit \(train.n)×784 k=32 in \(fitSeconds) s, test MSE \(pcaMSE) in \(mseSeconds) s; k=64 MSE \(ae64MSE)")

        let testF = test.images.map { Float($0) / 255 }
        // One test image per class.
        let firsts = (0..<10).map { c in test.labels.firstIndex(of: UInt8(c))! }
        let originals = firsts.map { Array(testF[($0 * d)..<(($0 + 1) * d)]) }
        func recon(_ p: PCA, _ imgs: [[Float]]) -> [[Float]] {
            let flat = imgs.flatMap { $0 }
            let z = flat.withUnsafeBufferPointer { p.project($0.baseAddress!, count: imgs.count) }
            let r = z.withUnsafeBufferPointer { p.reconstruct($0.baseAddress!, count: imgs.count) }
            return (0..<imgs.count).map { i in r[(i * d)..<((i + 1) * d)].map { min(1, max(0, $0)) } }
        }
        var g = SplitMix64(seed: 1)
        let noisy = originals.map { $0.map { min(1, max(0, $0 + 0.35 * g.normal())) } }

        // 8-D "codes": PCA-8 projections of the test set.
        let pca8 = try train.images.withUnsafeBufferPointer {
            try PCA.fit(images: $0.baseAddress!, count: train.n, dim: d, components: 8)
        }
        let codes = testF.withUnsafeBufferPointer { pca8.project($0.baseAddress!, count: test.n) }

        // Samples: Gaussian in the 32-D PC space; manifold: a grid over PC1 × PC2.
        let sd = pca32.eigenvalues.prefix(32).map { Float($0.squareRoot()) }
        let sampleCodes = (0..<30).flatMap { _ in sd.map { $0 * g.normal() } }
        let samplesFlat = sampleCodes.withUnsafeBufferPointer { pca32.reconstruct($0.baseAddress!, count: 30) }
        let samples = (0..<30).map { i in samplesFlat[(i * d)..<((i + 1) * d)].map { min(1, max(0, $0)) } }
        var manifold: [[[Float]]] = []
        for r in 0..<10 {
            var grid = [Float]()
            for c in 0..<10 {
                var z = [Float](repeating: 0, count: 32)
                z[0] = (Float(c) / 4.5 - 1) * 2 * sd[0]
                z[1] = (1 - Float(r) / 4.5) * 2 * sd[1]
                grid += z
            }
            let imgs = grid.withUnsafeBufferPointer { pca32.reconstruct($0.baseAddress!, count: 10) }
            manifold.append((0..<10).map { i in imgs[(i * d)..<((i + 1) * d)].map { min(1, max(0, $0)) } })
        }

        // Synthetic loss curves: 20 epochs × 469 steps, logged every 10 steps.
        var loss: [(step: Int, loss: Double)] = []
        var tmse: [(step: Int, mse: Double)] = []
        for s in stride(from: 10, through: 20 * 469, by: 10) {
            loss.append((s, ae64MSE + 0.08 / (1 + Double(s) / 150) + 0.002 * Double(g.normal())))
        }
        for e in 1...20 { tmse.append((e * 469, ae64MSE + 0.06 / (1 + Double(e * 469) / 150))) }

        let inputs = ReportInputs(
            title: "DEMO report — PCA stand-ins for a trained autoencoder (\(fashion ? "Fashion-MNIST" : "MNIST"))",
            config: [("preset", "demo"), ("latent", 8), ("epochs", 20),
                     ("note", "reconstructions are PCA-64, denoised rows PCA-64 of the noisy images")],
            summary: [("model", "PCA-64 stand-in"), ("test_mse", ae64MSE), ("pca32_test_mse", pcaMSE),
                      ("pca_fit_seconds", fitSeconds)],
            classNames: classNames, originals: originals, reconstructions: recon(pca64, noisy),
            noisy: noisy, codes: codes, codeDim: 8, codeLabels: test.labels,
            trainLoss: loss, testMSE: tmse, samples: samples, manifold: manifold,
            aeTestMSE: ae64MSE, pcaTestMSE: pcaMSE, pcaComponents: 32)
        let out = URL(fileURLWithPath: outPath)
        let files = try Report.write(inputs, to: out)
        print("demo: wrote \(files) to \(out.path)")
        // More components reconstruct better; both beat the mean image by far (Fashion-MNIST's
        // per-pixel variance is about 0.09).
        XCTAssertTrue(ae64MSE < pcaMSE && pcaMSE < 0.03, "PCA-64 \(ae64MSE), PCA-32 \(pcaMSE)")
        for f in files {
            let size = (try? FileManager.default.attributesOfItem(atPath: out.appendingPathComponent(f).path)[.size] as? Int) ?? 0
            XCTAssertGreaterThan(size ?? 0, 500, "\(f) is (nearly) empty")
        }
        let html = try String(contentsOf: out.appendingPathComponent("report.html"), encoding: .utf8)
        for f in files where f != "report.html" { XCTAssertTrue(html.contains(f), "report.html does not link \(f)") }

        // An extra figure for eyeballing the histogram: per-image PCA-32 error, shoes vs the rest.
        var errs: [Double] = []
        for i in 0..<2_000 {
            let img = Array(testF[(i * d)..<((i + 1) * d)])
            let m = img.withUnsafeBufferPointer { pca32.meanSquaredError(data: $0.baseAddress!, count: 1) }
            errs.append(m)
        }
        let shoe = (0..<2_000).map { [5, 7, 9].contains(Int(test.labels[$0])) }
        let normal = zip(errs, shoe).filter { !$0.1 }.map(\.0), anomalous = zip(errs, shoe).filter { $0.1 }.map(\.0)
        let thr = ROC.percentile(normal, 95)
        let svg = SVGPlot.histogram(title: "Per-image PCA-32 error", xLabel: "per-image MSE",
                                    sets: [.init(name: "other classes", values: normal),
                                           .init(name: "footwear", values: anomalous)],
                                    threshold: thr, thresholdLabel: "95th percentile")
        try AtomicFile.write(Data(svg.utf8), to: out.appendingPathComponent("histogram-demo.svg"))
        let auc = ROC.auc(scores: errs, positives: shoe)
        print("demo: AUC footwear vs rest \(auc)")
        XCTAssertTrue(auc > 0.5 && auc < 1, "footwear is reconstructed differently from the rest: AUC \(auc)")
    }
}
