import Foundation

/// A finished run folder read back (for `aetrain compare`): summary.json, config.json and the
/// curves of metrics.jsonl.
public struct RunHistory {
    public var folder: String
    /// summary.json as a JSON object (keys others add are kept).
    public var summary: [String: Any]
    /// config.json (empty for a run written before aetrain wrote it).
    public var config: [String: Any]
    public var hasConfig: Bool
    /// Training loss per logged step, and each evaluation's test MSE, with the seconds since
    /// training started when the line has them.
    public var trainLoss: [(step: Int, seconds: Double?, value: Double)] = []
    public var testMSE: [(step: Int, seconds: Double?, value: Double)] = []
    public var valMSE: [(step: Int, seconds: Double?, value: Double)] = []
    /// report/reconstructions.png, when the run wrote a report.
    public var reconstructionsPNG: Data?

    /// Reads a run folder; any problem is one line naming the folder or file (exit 3).
    public static func load(_ folder: String) throws -> RunHistory {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir) else {
            throw AETError.data("\(folder): no such run folder")
        }
        guard isDir.boolValue else { throw AETError.data("\(folder): not a folder (expected a run's --out folder)") }
        let summaryPath = (folder as NSString).appendingPathComponent("summary.json")
        guard FileManager.default.fileExists(atPath: summaryPath) else {
            throw AETError.data("\(folder): not a finished run folder (no summary.json)")
        }
        func object(_ path: String) throws -> [String: Any] {
            let data = try InputFile.readAll(path, what: "a JSON file", maxBytes: 64 << 20)
            guard let o = JSON.parseObject(String(decoding: data, as: UTF8.self)) else {
                throw AETError.data("\(path): not a JSON object")
            }
            return o
        }
        let summary = try object(summaryPath)
        let configPath = (folder as NSString).appendingPathComponent(RunConfigFile.fileName)
        let hasConfig = FileManager.default.fileExists(atPath: configPath)
        var r = RunHistory(folder: folder, summary: summary, config: hasConfig ? try object(configPath) : [:], hasConfig: hasConfig)
        let metricsPath = (folder as NSString).appendingPathComponent("metrics.jsonl")
        guard FileManager.default.fileExists(atPath: metricsPath) else {
            throw AETError.data("\(folder): not a run folder (no metrics.jsonl)")
        }
        let text = String(decoding: try InputFile.readAll(metricsPath, what: "a metrics file", maxBytes: 1 << 30), as: UTF8.self)
        for (n, line) in text.split(separator: "\n").enumerated() {
            guard let o = JSON.parseObject(String(line)), let step = o["step"] as? Int else {
                throw AETError.data("\(metricsPath): line \(n + 1) is not a metrics line")
            }
            let t = number(o["elapsed_seconds"])
            if let m = number(o["test_mse"]) ?? (o["test_mse"] is NSNull ? Double.nan : nil) {
                r.testMSE.append((step, t, m))
                if let v = number(o["val_mse"]) { r.valMSE.append((step, t, v)) }
            } else if let l = number(o["loss"]) ?? (o["loss"] is NSNull ? Double.nan : nil) {
                r.trainLoss.append((step, t, l))
            }
        }
        let png = ((folder as NSString).appendingPathComponent("report") as NSString).appendingPathComponent("reconstructions.png")
        if FileManager.default.fileExists(atPath: png) { r.reconstructionsPNG = try? InputFile.readAll(png, what: "a PNG file", maxBytes: 64 << 20) }
        return r
    }

    static func number(_ v: Any?) -> Double? {
        if let d = v as? Double { return d }
        if let i = v as? Int { return Double(i) }
        return nil
    }

    /// The elapsed_seconds of the last line of a metrics file (0 when none has it): where a
    /// resumed run's clock continues.
    public static func lastElapsed(metrics path: String) -> Double {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n").reversed() {
            if let o = JSON.parseObject(String(line)), let t = number(o["elapsed_seconds"]), t.isFinite, t >= 0 { return t }
        }
        return 0
    }
}
