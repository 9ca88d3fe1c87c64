import Foundation
import XCTest
@testable import AutoencoderCore

/// Runs the built `aetrain` binary, alone or under mpirun, with a hard timeout.
enum AE {
    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var binary: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("aetrain").path,
        ] + Bundle.allBundles.map { $0.bundleURL.deletingLastPathComponent().appendingPathComponent("aetrain").path }
            + [root.appendingPathComponent(".build/debug/aetrain").path]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }

    /// Real MNIST: ../shared/data/mnist beside the repo, or $AETRAIN_MNIST_DIR.
    static var mnistDir: String? {
        let env = ProcessInfo.processInfo.environment["AETRAIN_MNIST_DIR"]
        let cands = [env, root.deletingLastPathComponent().appendingPathComponent("shared/data/mnist").path].compactMap { $0 }
        return cands.first { FileManager.default.fileExists(atPath: $0 + "/train-images-idx3-ubyte.gz") }
    }

    static func requireMNIST() throws -> String {
        guard let d = mnistDir else { throw XCTSkip("MNIST not found beside the repo (../shared/data/mnist) or in $AETRAIN_MNIST_DIR") }
        return d
    }

    static var hasMPI: Bool { which("mpirun") != nil }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var seconds: Double
        var timedOut: Bool
    }

    static func tempDir(_ tag: String) -> String {
        let d = NSTemporaryDirectory() + "aetrain-test-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// Runs a command; kills it (and its process group) after `timeout` seconds.
    static func exec(_ argv: [String], env extra: [String: String] = [:], timeout: Double = 120) -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : (which(argv[0]) ?? argv[0]))
        p.arguments = Array(argv.dropFirst())
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OPENBLAS_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] ?? "1"
        env["OMP_NUM_THREADS"] = env["OMP_NUM_THREADS"] ?? "1"
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let outURL = URL(fileURLWithPath: tempDir("out") + "/stdout"), errURL = URL(fileURLWithPath: tempDir("err") + "/stderr")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let oh = try! FileHandle(forWritingTo: outURL), eh = try! FileHandle(forWritingTo: errURL)
        p.standardOutput = oh
        p.standardError = eh
        p.standardInput = FileHandle.nullDevice
        let t0 = Date()
        try! p.run()
        var timedOut = false
        while p.isRunning {
            if Date().timeIntervalSince(t0) > timeout {
                timedOut = true
                kill(p.processIdentifier, SIGKILL)
                break
            }
            usleep(20_000)
        }
        p.waitUntilExit()
        try? oh.close(); try? eh.close()
        let out = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        return Result(status: p.terminationStatus, stdout: out, stderr: err, seconds: Date().timeIntervalSince(t0), timedOut: timedOut)
    }

    /// `aetrain ARGS` without mpirun.
    static func run(_ args: [String], env: [String: String] = [:], timeout: Double = 120) -> Result {
        exec([binary] + args, env: env, timeout: timeout)
    }

    /// `mpirun -np N aetrain ARGS` (oversubscribed, so 4 ranks run on 2 cores).
    static func mpirun(_ np: Int, _ args: [String], env: [String: String] = [:], timeout: Double = 180) throws -> Result {
        guard hasMPI else { throw XCTSkip("mpirun not installed") }
        return exec(["mpirun", "--oversubscribe", "-np", String(np), binary] + args, env: env, timeout: timeout)
    }

    static func jsonLines(_ path: String) -> [[String: Any]] {
        guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return s.split(separator: "\n").compactMap { JSON.parseObject(String($0)) }
    }

    static func json(_ path: String) -> [String: Any]? {
        guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return JSON.parseObject(s)
    }

    /// Per-step losses from metrics.jsonl, keyed by step.
    static func stepLosses(_ out: String) -> [Int: Double] {
        var r: [Int: Double] = [:]
        for o in jsonLines(out + "/metrics.jsonl") {
            if let s = o["step"] as? Int, let l = o["loss"] as? Double, o["test_mse"] == nil { r[s] = l }
        }
        return r
    }

    static func latestCheckpoint(_ out: String) -> String? { Checkpoint.list(out: out).first }

    static func parameters(_ ckpt: String) throws -> [String: [Float]] {
        let f = try Safetensors.read(URL(fileURLWithPath: ckpt), requireChecksum: true)
        var r: [String: [Float]] = [:]
        for t in f.tensors where !t.name.hasPrefix("optimizer.") { r[t.name] = try f.floats(t.name) }
        return r
    }
}
