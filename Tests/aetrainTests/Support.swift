import Foundation
import XCTest
import TestSupport
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

    /// Real MNIST: $AETRAIN_MNIST_DIR, else ./data/mnist in the repository (where
    /// `aetrain fetch mnist` puts it).
    static var mnistDir: String? {
        let env = ProcessInfo.processInfo.environment["AETRAIN_MNIST_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        let cands = [env, root.appendingPathComponent("data/mnist").path].compactMap { $0 }
        return cands.first { FileManager.default.fileExists(atPath: $0 + "/train-images-idx3-ubyte.gz") }
    }

    /// The MNIST folder; a test that needs it fails (not skips) without it.
    static func requireMNIST() throws -> String {
        guard let d = mnistDir else {
            throw TestFailure("MNIST not found: set AETRAIN_MNIST_DIR to a folder with the four MNIST .gz files, "
                              + "put them in ./data/mnist, or run Launch/test.sh (it finds or fetches them)")
        }
        return d
    }

    /// The optimised binary users run, `.build/release/aetrain` (Launch/test.sh builds it first).
    /// Fails when it is missing or older than a source file, rather than testing a stale build.
    static func releaseBinary() throws -> String {
        let path = root.appendingPathComponent(".build/release/aetrain").path
        let fm = FileManager.default
        func modified(_ p: String) -> Date? { (try? fm.attributesOfItem(atPath: p))?[.modificationDate] as? Date }
        guard var built = modified(path), fm.isExecutableFile(atPath: path) else {
            throw TestFailure("no release build at \(path): run `swift build -c release` first (Launch/test.sh does)")
        }
        // A build that finds nothing to relink leaves the binary's date alone but rewrites its plan.
        if let planned = modified(root.appendingPathComponent(".build/release/description.json").path) { built = max(built, planned) }
        let sources = root.appendingPathComponent("Sources").path
        for case let rel as String in fm.enumerator(atPath: sources) ?? NSEnumerator()
        where [".swift", ".c", ".h", ".modulemap"].contains(where: rel.hasSuffix) {
            if let d = (try? fm.attributesOfItem(atPath: sources + "/" + rel))?[.modificationDate] as? Date, d > built {
                throw TestFailure("the release build at \(path) is older than Sources/\(rel): run `swift build -c release` first")
            }
        }
        return path
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

    /// Every temp folder of this test process lives under one folder in $TMPDIR, removed when
    /// the process exits (AETRAIN_TEST_KEEP=1 keeps it, to look at the runs).
    static let sessionDir: String = {
        let d = (NSTemporaryDirectory() as NSString).appendingPathComponent("aetrain-tests-\(getpid())")
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        if ProcessInfo.processInfo.environment["AETRAIN_TEST_KEEP"] != "1" {
            atexit { try? FileManager.default.removeItem(atPath: AE.sessionDir) }
        }
        return d
    }()

    static func tempDir(_ tag: String) -> String {
        let d = sessionDir + "/\(tag)-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// A process for `argv` (found on PATH) with the tests' environment: mpirun allowed as root,
    /// one BLAS/OpenMP thread unless set, then `extra`.
    static func process(_ argv: [String], env extra: [String: String]) -> Process {
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
        return p
    }

    /// Runs a command; kills it (and its process group) after `timeout` seconds.
    static func exec(_ argv: [String], env extra: [String: String] = [:], timeout: Double = 120) -> Result {
        let p = process(argv, env: extra)
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
    static func mpirun(_ np: Int, _ args: [String], env: [String: String] = [:], timeout: Double = 180,
                       binary bin: String? = nil) throws -> Result {
        try requireMPI()
        return exec(["mpirun", "--oversubscribe", "-np", String(np), bin ?? binary] + args, env: env, timeout: timeout)
    }

    static func requireMPI() throws {
        guard hasMPI else { throw TestFailure("mpirun not installed (apt-get install openmpi-bin; Launch/test.sh installs it)") }
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
        try tensors(ckpt).filter { !$0.key.hasPrefix("optimizer.") }
    }

    /// Every tensor of a checkpoint: the parameters and the Adam moments (optimizer.exp_avg.*,
    /// optimizer.exp_avg_sq.*), which carry the gradient's scale (exp_avg_sq ∝ g²).
    static func tensors(_ ckpt: String) throws -> [String: [Float]] {
        let f = try Safetensors.read(URL(fileURLWithPath: ckpt), requireChecksum: true)
        var r: [String: [Float]] = [:]
        for t in f.tensors { r[t.name] = try f.floats(t.name) }
        return r
    }

    /// A checkpoint's metadata (step, epoch, batch_in_epoch, adam_step, ...).
    static func metadata(_ ckpt: String) throws -> [String: String] {
        try Safetensors.read(URL(fileURLWithPath: ckpt), requireChecksum: true).metadata
    }

    /// The newest checkpoint of a run, or a failure naming the run.
    static func checkpoint(_ out: String) throws -> String {
        guard let c = latestCheckpoint(out) else { throw TestFailure("no checkpoint in \(out)/checkpoints") }
        return c
    }

    /// Training-step lines of metrics.jsonl without the timing fields (which differ run to run).
    static func stepLines(_ out: String) -> [[String: Double]] {
        jsonLines(out + "/metrics.jsonl").filter { $0["test_mse"] == nil }.map { line in
            var r: [String: Double] = [:]
            for (k, v) in line where k != "samples_per_second" && k != "elapsed_seconds" {
                if let d = v as? Double { r[k] = d } else if let i = v as? Int { r[k] = Double(i) }
            }
            return r
        }
    }

    // MARK: runs in the background

    /// A process started in the background (its own process group), for signals mid-run.
    final class Running {
        let process: Process
        let outURL: URL, errURL: URL
        init(process: Process, outURL: URL, errURL: URL) { self.process = process; self.outURL = outURL; self.errURL = errURL }
        var pid: Int32 { process.processIdentifier }
        var isRunning: Bool { process.isRunning }
        /// Waits up to `timeout` s (then SIGKILLs it); returns the exit status and output.
        func wait(timeout: Double = 120) -> Result {
            let t0 = Date()
            var timedOut = false
            while process.isRunning {
                if Date().timeIntervalSince(t0) > timeout { timedOut = true; kill(pid, SIGKILL); break }
                usleep(20_000)
            }
            process.waitUntilExit()
            return Result(status: process.terminationStatus, stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                          stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "",
                          seconds: Date().timeIntervalSince(t0), timedOut: timedOut)
        }
    }

    static func start(_ argv: [String], env extra: [String: String] = [:]) throws -> Running {
        let p = process(argv, env: extra)
        let dir = tempDir("bg")
        let outURL = URL(fileURLWithPath: dir + "/stdout"), errURL = URL(fileURLWithPath: dir + "/stderr")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return Running(process: p, outURL: outURL, errURL: errURL)
    }

    /// Waits until OUT/metrics.jsonl holds at least `steps` training lines; false when the run
    /// ended first or `timeout` passed.
    static func waitForSteps(_ out: String, _ steps: Int, while run: Running, timeout: Double = 60) -> Bool {
        let t0 = Date()
        while run.isRunning && Date().timeIntervalSince(t0) < timeout {
            if let s = try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8),
               s.split(separator: "\n").filter({ $0.contains("\"loss\"") && !$0.contains("test_mse") }).count >= steps {
                return true
            }
            usleep(5_000)
        }
        return false
    }

    /// The pid of the process running `binary` with `--out OUT` as MPI rank `rank` (from /proc).
    static func rankPID(out: String, rank: Int) -> Int32? {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(name)/cmdline"),
                  let env = FileManager.default.contents(atPath: "/proc/\(name)/environ") else { continue }
            let args = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let i = args.firstIndex(of: "--out"), i + 1 < args.count, args[i + 1] == out,
                  !(args.first ?? "").hasSuffix("mpirun") else { continue }
            let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }
}
