import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// Hostile input and odd operations (issue 14): every case ends with one line naming the file or
/// flag, the documented exit code, in under 10 s, on every rank for the train cases under
/// `mpirun -np 2`, with the previous checkpoint still loadable where there is one.
///
/// `AETRAIN_HOSTILE_BIN=/path/to/aetrain swift test --filter HostileInputTests` runs the cases
/// against another build (that is how they were shown to fail on the code before the fixes).
final class HostileInputTests: XCTestCase {
    static var bin: String { ProcessInfo.processInfo.environment["AETRAIN_HOSTILE_BIN"] ?? AE.binary }

    func run(_ args: [String], env: [String: String] = [:], timeout: Double = 30) -> AE.Result {
        AE.exec([HostileInputTests.bin] + args, env: env.merging(["SWIFT_BACKTRACE": "enable=no"]) { a, _ in a }, timeout: timeout)
    }

    /// `mpirun -np N aetrain ARGS` where every rank records its own exit code (a wrapper script,
    /// as in Tests/Cluster/faults.sh): returns the result and each rank's code (nil: killed).
    func mpirunEveryRank(_ np: Int, _ args: [String], timeout: Double = 30) throws -> (AE.Result, [Int32?]) {
        try mpirunRecordingExits(ranks: np, timeout: timeout) { wrap in
            ["-np", String(np), wrap, HostileInputTests.bin] + args
        }
    }

    /// Runs `mpirun ARGS`, `launch(wrapper)` giving ARGS: each rank started through `wrapper`
    /// writes its exit code to a file. Returns the result and the codes of ranks 0..<ranks.
    func mpirunRecordingExits(ranks: Int, env: [String: String] = [:], timeout: Double,
                              _ launch: (String) -> [String]) throws -> (AE.Result, [Int32?]) {
        try AE.requireMPI()
        let dir = AE.tempDir("ranks")
        let wrap = dir + "/rank-exit.sh"
        try """
        #!/bin/sh
        trap ': deferred until the child exits' TERM INT
        "$@"
        rc=$?
        echo "$rc" > "\(dir)/rank-${OMPI_COMM_WORLD_RANK:-x}"
        exit $rc
        """.write(toFile: wrap, atomically: true, encoding: .utf8)
        chmod(wrap, 0o755)
        let r = AE.exec(["mpirun", "--oversubscribe"] + launch(wrap),
                        env: env.merging(["SWIFT_BACKTRACE": "enable=no"]) { a, _ in a }, timeout: timeout)
        let codes = (0..<ranks).map { k -> Int32? in
            (try? String(contentsOfFile: "\(dir)/rank-\(k)", encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        return (r, codes)
    }

    /// The contract of a failure: the exit code, within 10 s, exactly one distinct `error:` line
    /// from rank 0 (ranks > 0 prefix theirs), containing every string of `mentions`, no crash.
    func expectFailure(_ r: AE.Result, _ code: Int32, _ mentions: [String], ranks: [Int32?]? = nil,
                       _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.timedOut, "\(what): timed out (hang)", file: file, line: line)
        XCTAssertEqual(r.status, code, "\(what): \(r.stderr.suffix(600))", file: file, line: line)
        XCTAssertLessThan(r.seconds, 10, "\(what): took \(r.seconds) s", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        let rootErrors = Set(lines.filter { $0.hasPrefix("error: ") })
        XCTAssertEqual(rootErrors.count, 1, "\(what): expected one error line, got: \(r.stderr.suffix(600))", file: file, line: line)
        let all = lines.filter { $0.contains("error: ") }
        for m in mentions {
            XCTAssertTrue(all.contains { $0.contains(m) }, "\(what): no error line mentions '\(m)': \(r.stderr.suffix(600))", file: file, line: line)
        }
        for bad in ["Fatal error", "Stack dump", "NSCocoaErrorDomain", "Segmentation fault", "Current stack trace"] {
            XCTAssertFalse(r.stderr.contains(bad), "\(what): crashed: \(r.stderr.suffix(600))", file: file, line: line)
        }
        if let ranks {
            for (k, c) in ranks.enumerated() {
                XCTAssertEqual(c, code, "\(what): rank \(k) exited \(c.map(String.init) ?? "by a signal (killed)")", file: file, line: line)
            }
        }
    }

    // MARK: data folders

    static func be32(_ v: Int) -> [UInt8] {
        let u = UInt32(truncatingIfNeeded: v)
        return [UInt8(u >> 24), UInt8((u >> 16) & 0xff), UInt8((u >> 8) & 0xff), UInt8(u & 0xff)]
    }

    /// A copy of the real MNIST folder (symlinks to the four .gz files) where `replace` swaps
    /// files for raw bytes (written under the name without .gz).
    func dataDir(_ mnist: String, _ tag: String, replace: [String: [UInt8]] = [:]) throws -> String {
        let dir = AE.tempDir(tag)
        for f in DatasetName.fileNames {
            if let bytes = replace[f] {
                try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(f)"))
            } else {
                try FileManager.default.createSymbolicLink(atPath: "\(dir)/\(f).gz", withDestinationPath: "\(mnist)/\(f).gz")
            }
        }
        return dir
    }

    /// `base` with the flags of `extra` replaced by extra's values.
    func merge(_ base: [String], _ extra: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < base.count {
            if base[i].hasPrefix("--"), extra.contains(base[i]), i + 1 < base.count, !base[i + 1].hasPrefix("--") { i += 2; continue }
            out.append(base[i])
            i += 1
        }
        return out + extra
    }

    func small(_ dir: String, _ out: String) -> [String] {
        ["--dataset", "mnist", "--data-dir", dir, "--model", "mlp3", "--train-limit", "256", "--test-limit", "64",
         "--batch-size", "64", "--max-steps", "4", "--log-every", "1", "--no-report", "--out", out]
    }

    // MARK: 1. sizes checked before allocation

    func testIDXHeaderClaimsAreCheckedAgainstTheFileBeforeAllocating() throws {
        let mnist = try AE.requireMNIST()
        // 99,999,999 images and labels in 100-byte raw files (78 GB if believed).
        let bomb = Self.be32(0x803) + Self.be32(99_999_999) + Self.be32(28) + Self.be32(28) + [UInt8](repeating: 0, count: 84)
        let bombLabels = Self.be32(0x801) + Self.be32(99_999_999) + [UInt8](repeating: 0, count: 92)
        let d1 = try dataDir(mnist, "bomb", replace: ["train-images-idx3-ubyte": bomb, "train-labels-idx1-ubyte": bombLabels])
        let (r1, k1) = try mpirunEveryRank(2, small(d1, AE.tempDir("o")))
        expectFailure(r1, ExitCode.badInput, ["\(d1)/train-labels-idx1-ubyte", "truncated", "100 bytes"], ranks: k1, "99,999,999 labels in 100 bytes")
        // The real labels (60,000), and a 100-byte image file that claims as many.
        let short = Self.be32(0x803) + Self.be32(60000) + Self.be32(28) + Self.be32(28) + [UInt8](repeating: 0, count: 84)
        let d0 = try dataDir(mnist, "short", replace: ["train-images-idx3-ubyte": short])
        let (r0, k0) = try mpirunEveryRank(2, small(d0, AE.tempDir("o")))
        expectFailure(r0, ExitCode.badInput, ["\(d0)/train-images-idx3-ubyte", "truncated", "100 bytes"], ranks: k0, "60,000 images in 100 bytes")
        // A gzip file of 1 KB cannot hold 47 MB: deflate's limit says so before anything is read.
        let dz = try dataDir(mnist, "gz")
        unlink(dz + "/train-images-idx3-ubyte.gz")
        let head = (Self.be32(0x803) + Self.be32(60000) + Self.be32(28) + Self.be32(28)).map { String(format: "\\%03o", $0) }.joined()
        XCTAssertEqual(AE.exec(["/bin/sh", "-c", "{ printf '\(head)'; head -c 1000000 /dev/zero; } | gzip -c > '\(dz)/train-images-idx3-ubyte.gz'"]).status, 0)
        let rz = run(small(dz, AE.tempDir("o")))
        expectFailure(rz, ExitCode.badInput, ["\(dz)/train-images-idx3-ubyte.gz", "gzip file can hold"], "60,000 images in a 1 KB gzip file")
        // 10,000,000 images claimed by the labels and images alike, 1 MB of pixels behind them.
        let lbl = Self.be32(0x801) + Self.be32(10_000_000) + [UInt8](repeating: 1, count: 1000)
        let img = Self.be32(0x803) + Self.be32(10_000_000) + Self.be32(28) + Self.be32(28) + [UInt8](repeating: 7, count: 1 << 20)
        let d2 = try dataDir(mnist, "bomb2", replace: ["train-labels-idx1-ubyte": lbl, "train-images-idx3-ubyte": img])
        let r2 = run(small(d2, AE.tempDir("o")))
        expectFailure(r2, ExitCode.badInput, ["\(d2)/train-labels-idx1-ubyte", "truncated"], "10,000,000 labels claimed")
        // The image header disagreeing with the labels fails before the images are read.
        let d3 = try dataDir(mnist, "bomb3", replace: ["train-images-idx3-ubyte": img])
        let r3 = run(small(d3, AE.tempDir("o")))
        expectFailure(r3, ExitCode.badInput, ["60000 labels", "10000000 images"], "10,000,000 images claimed")
        XCTAssertLessThan(r3.seconds, 3, "must not read the claimed images first")
    }

    func testHugeFlagsAreUsageErrorsNamingTheFlagAndTheMemory() throws {
        let mnist = try AE.requireMNIST()
        let base = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--test-limit", "64", "--max-steps", "2", "--no-report"]
        let cases: [([String], [String])] = [
            (["--batch-size", "1000000000"], ["--batch-size 1000000000"]),
            (["--latent", "1000000000"], ["--latent 1000000000"]),
            (["--encoder", "100000000", "--latent", "3"], ["--encoder 100000000", "of memory"]),
            (["--encoder", "100000,100000", "--latent", "100000"], ["--encoder 100000,100000 --latent 100000", "of memory"]),
            // Either the model or 30,000 samples per rank of it exceed any machine's memory.
            (["--encoder", "1000000", "--latent", "16", "--train-limit", "60000", "--batch-size", "60000"], ["of memory"]),
            (["--epochs", "99999999999"], ["--epochs 99999999999"]),
            (["--max-steps", "9223372036854775807"], ["--max-steps 9223372036854775807"]),
        ]
        for (extra, mentions) in cases {
            let (r, k) = try mpirunEveryRank(2, merge(base + ["--out", AE.tempDir("o")], extra))
            expectFailure(r, ExitCode.usage, mentions, ranks: k, extra.joined(separator: " "))
        }
    }

    func testBatchLargerThanTheTrainingSetIsClampedToIt() throws {
        let mnist = try AE.requireMNIST()
        let base = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "100", "--test-limit", "64", "--epochs", "3",
                    "--log-every", "1", "--no-report"]
        let outBig = AE.tempDir("clamp"), outExact = AE.tempDir("exact")
        let big = run(base + ["--batch-size", "50000000", "--out", outBig], timeout: 60)
        XCTAssertEqual(big.status, 0, big.stderr)
        XCTAssertTrue(big.stderr.contains("note: --batch-size 50000000 is larger than the 100 training images; using 100"), big.stderr)
        let exact = run(base + ["--batch-size", "100", "--out", outExact], timeout: 60)
        XCTAssertEqual(exact.status, 0, exact.stderr)
        let s = try XCTUnwrap(AE.json(outBig + "/summary.json"))
        XCTAssertEqual(s["global_batch_size"] as? Int, 100)
        XCTAssertEqual(s["steps"] as? Int, 3)
        // The same steps as the batch that equals the set.
        XCTAssertEqual(AE.stepLosses(outBig), AE.stepLosses(outExact))
        XCTAssertEqual(AE.stepLosses(outBig).count, 3)
    }

    func testGenerateCountIsBounded() throws {
        let mnist = try AE.requireMNIST()
        let out = AE.tempDir("vae")
        let t = run(["--dataset", "mnist", "--data-dir", mnist, "--model", "vae", "--train-limit", "256", "--test-limit", "64",
                     "--max-steps", "1", "--no-report", "--out", out], timeout: 60)
        XCTAssertEqual(t.status, 0, t.stderr)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        for (n, ext) in [("1000000000", "png"), ("1000000000", "npy"), ("0", "npy"), ("-3", "png")] {
            let r = run(["generate", "--checkpoint", ck, "--count=\(n)", "--output", out + "/g." + ext], timeout: 20)
            expectFailure(r, ExitCode.usage, ["--count \(n)"], "generate --count \(n) .\(ext)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/g." + ext))
        }
        // Streaming .npy: many samples in little memory, read back with the right shape.
        let ok = run(["generate", "--checkpoint", ck, "--count", "300", "--output", out + "/g.npy"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let npy = try NPY.read(URL(fileURLWithPath: out + "/g.npy"))
        XCTAssertEqual(npy.shape, [300, 28, 28])
        let vals = npy.payload.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(vals.count, 300 * 784)
        XCTAssertTrue(vals.allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    // MARK: 2. checkpoints validated as a whole

    /// A short run's checkpoint, and a builder of format-1 variants with edited metadata or
    /// tensors whose checksum (data only, as format 1 has it) is valid: what range checks must catch.
    func trainedCheckpoint(_ mnist: String) throws -> (out: String, ck: String, file: SafetensorsFile) {
        let out = AE.tempDir("ckv")
        let r = run(["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "256", "--test-limit", "64",
                     "--batch-size", "64", "--epochs", "2", "--max-steps", "6", "--checkpoint-every", "2", "--no-report", "--out", out], timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        return (out, ck, try Safetensors.read(URL(fileURLWithPath: ck)))
    }

    func variant(_ f: SafetensorsFile, at path: String, meta edit: (inout [String: String]) -> Void,
                 values: ((String, inout [Float]) -> Void)? = nil) throws {
        var meta = f.metadata
        meta["format_version"] = "1"
        meta[Safetensors.fileChecksumKey] = nil
        edit(&meta)
        var arrays: [(String, [Int], [Float])] = []
        for t in f.tensors {
            var v = try f.floats(t.name)
            values?(t.name, &v)
            arrays.append((t.name, t.shape, v))
        }
        var buffers: [UnsafeMutableBufferPointer<Float>] = []
        defer { buffers.forEach { $0.deallocate() } }
        var list: [Safetensors.Tensor] = []
        for (name, shape, v) in arrays {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: v.count)
            _ = b.initialize(from: v)
            buffers.append(b)
            list.append((name, shape, UnsafeBufferPointer(b)))
        }
        try Safetensors.encode(tensors: list, metadata: meta).write(to: URL(fileURLWithPath: path))
    }

    func configEdit(_ meta: inout [String: String], _ body: (inout [String: Any]) -> Void) {
        var c = JSON.parseObject(meta["config"]!)!
        body(&c)
        meta["config"] = String(decoding: try! JSONSerialization.data(withJSONObject: c, options: [.sortedKeys]), as: UTF8.self)
    }

    func testCheckpointMetadataIsRangeCheckedAndInfoGivesTheLoadVerdict() throws {
        let mnist = try AE.requireMNIST()
        let (out, good, f) = try trainedCheckpoint(mnist)
        let dir = AE.tempDir("variants")
        let cases: [(String, (inout [String: String]) -> Void, [String])] = [
            ("empty-encoder", { m in self.configEdit(&m) { c in
                var model = c["model"] as! [String: Any]; model["encoder"] = [Any](); c["model"] = model } }, ["encoder has no layers"]),
            ("negative-batch", { $0["batch_in_epoch"] = "-5" }, ["batch_in_epoch -5"]),
            ("huge-batch", { $0["batch_in_epoch"] = "1000000000000000" }, ["batch_in_epoch 1000000000000000"]),
            ("max-step", { $0["step"] = "9223372036854775807" }, ["step 9223372036854775807"]),
            ("epoch-past-step", { $0["epoch"] = "100" }, ["epoch 100"]),
            ("adam-step", { $0["adam_step"] = "-1" }, ["adam_step -1"]),
            ("world-size-0", { $0["world_size"] = "0" }, ["world_size 0"]),
            ("format-3", { $0["format_version"] = "3" }, ["format_version 3"]),
            ("lr-nan", { m in self.configEdit(&m) { c in var a = c["adam"] as! [String: Any]; a["lr"] = "nan"; c["adam"] = a } }, ["--lr nan"]),
            ("even-kernel", { m in self.configEdit(&m) { c in
                var model = c["model"] as! [String: Any]
                model["encoder"] = [["conv": ["channels": 4, "kernel": 2, "activation": "relu"]]] as [Any]
                c["model"] = model } }, ["conv kernel 2"]),
            ("model-name", { $0["model"] = "deep32" }, ["model deep32"]),
        ]
        for (name, edit, mentions) in cases {
            let p = "\(dir)/\(name).safetensors"
            try variant(f, at: p, meta: edit)
            for args in [["info", p], ["eval", "--checkpoint", p, "--data-dir", mnist, "--limit", "64"]] {
                expectFailure(run(args), ExitCode.badInput, [p] + mentions, "\(name): \(args[0])")
            }
        }
        // Non-finite weights or moments, a negative second moment.
        let valueCases: [(String, String, Float, String)] = [
            ("nan-weight", "encoder.0.weight", .nan, "NaN or Inf"), ("inf-moment", "optimizer.exp_avg.decoder.0.bias", .infinity, "NaN or Inf"),
            ("negative-v", "optimizer.exp_avg_sq.encoder.2.weight", -1, "negative"),
        ]
        for (name, tensor, value, cause) in valueCases {
            let p = "\(dir)/\(name).safetensors"
            try variant(f, at: p, meta: { _ in }) { n, v in if n == tensor { v[3] = value } }
            for args in [["info", p], ["eval", "--checkpoint", p, "--data-dir", mnist, "--limit", "64"]] {
                expectFailure(run(args), ExitCode.badInput, [p, tensor, cause], "\(name): \(args[0])")
            }
        }
        // A resume from such files stops every rank (no SIGSEGV, no hang, no run past the end).
        for name in ["negative-batch", "huge-batch", "max-step", "nan-weight"] {
            let p = "\(dir)/\(name).safetensors"
            let (r, k) = try mpirunEveryRank(2, ["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "256",
                                                 "--test-limit", "64", "--batch-size", "64", "--epochs", "2", "--no-report",
                                                 "--resume", p, "--out", out])
            expectFailure(r, ExitCode.badInput, [p], ranks: k, "resume from \(name)")
        }
        // --resume auto skips an invalid newest checkpoint, naming it.
        try variant(f, at: out + "/checkpoints/step-00000099.safetensors", meta: { $0["batch_in_epoch"] = "-1" })
        let auto = run(["--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--train-limit", "256", "--test-limit", "64",
                        "--batch-size", "64", "--epochs", "2", "--max-steps", "6", "--no-report", "--resume", "auto", "--out", out], timeout: 60)
        XCTAssertEqual(auto.status, 0, auto.stderr)
        XCTAssertTrue(auto.stderr.contains("skipping invalid checkpoint") && auto.stderr.contains("step-00000099"), auto.stderr)
        // The genuine checkpoint is still valid, and a format-1 copy of it is still read.
        XCTAssertEqual(run(["info", good]).status, 0)
        let v1 = dir + "/v1.safetensors"
        try variant(f, at: v1, meta: { _ in })
        let info = run(["info", v1])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("format_version 1"), info.stdout)
        let ev = run(["eval", "--checkpoint", v1, "--data-dir", mnist, "--limit", "64"])
        XCTAssertEqual(ev.status, 0, ev.stderr)
    }

    func testNewCheckpointsAreFormat2WithAWholeFileChecksum() throws {
        let mnist = try AE.requireMNIST()
        let (_, ck, f) = try trainedCheckpoint(mnist)
        XCTAssertEqual(f.metadata["format_version"], "2")
        let sum = try XCTUnwrap(f.metadata[Safetensors.fileChecksumKey])
        // Independently: SHA-256 of the file with the 64 digits of the value replaced by '0'.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: ck)))
        let key = Array("\"file_sha256\":\"".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - key.count)).first { bytes[$0..<($0 + key.count)].elementsEqual(key) }) + key.count
        XCTAssertEqual(String(decoding: bytes[at..<(at + 64)], as: UTF8.self), sum)
        var zeroed = bytes
        zeroed.replaceSubrange(at..<(at + 64), with: Array(repeating: UInt8(ascii: "0"), count: 64))
        XCTAssertEqual(SHA256Digest.hex(Data(zeroed)), sum)
        // A changed metadata byte (a digit of the seed inside config) is caught, not only data bytes.
        let seedKey = Array("\\\"seed\\\":0".utf8)
        let s = try XCTUnwrap((0..<(bytes.count - seedKey.count)).first { bytes[$0..<($0 + seedKey.count)].elementsEqual(seedKey) })
        bytes[s + seedKey.count - 1] = UInt8(ascii: "5")
        let p = AE.tempDir("flip") + "/seed.safetensors"
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        expectFailure(run(["info", p]), ExitCode.badInput, [p, "file checksum mismatch"], "metadata byte changed")
    }

    // MARK: 4. only regular files are read

    func testSpecialFilesAsInputsAreOneLineErrors() throws {
        let mnist = try AE.requireMNIST()
        // A FIFO as a data file: no writer ever comes; it must not block the open.
        let d = try dataDir(mnist, "fifo")
        unlink(d + "/train-images-idx3-ubyte.gz")
        XCTAssertEqual(mkfifo(d + "/train-images-idx3-ubyte.gz", 0o644), 0)
        let (r, k) = try mpirunEveryRank(2, small(d, AE.tempDir("o")))
        expectFailure(r, ExitCode.badInput, [d + "/train-images-idx3-ubyte.gz", "FIFO"], ranks: k, "FIFO data file")
        // A character device (a link to /dev/zero) and a directory.
        let z = try dataDir(mnist, "devzero")
        unlink(z + "/t10k-labels-idx1-ubyte.gz")
        try FileManager.default.createSymbolicLink(atPath: z + "/t10k-labels-idx1-ubyte.gz", withDestinationPath: "/dev/zero")
        expectFailure(run(small(z, AE.tempDir("o"))), ExitCode.badInput, [z + "/t10k-labels-idx1-ubyte.gz", "character device"], "/dev/zero data file")
        let dd = try dataDir(mnist, "dir")
        unlink(dd + "/t10k-images-idx3-ubyte.gz")
        try FileManager.default.createDirectory(atPath: dd + "/t10k-images-idx3-ubyte.gz", withIntermediateDirectories: false)
        expectFailure(run(small(dd, AE.tempDir("o"))), ExitCode.badInput, [dd + "/t10k-images-idx3-ubyte.gz", "directory"], "directory data file")
        // Checkpoints: a directory, a FIFO, a device, an empty --resume.
        let dirCk = AE.tempDir("ckdir")
        let fifoCk = dirCk + "/step-00000001.safetensors"
        XCTAssertEqual(mkfifo(fifoCk, 0o644), 0)
        expectFailure(run(["info", dirCk]), ExitCode.badInput, [dirCk, "directory"], "info DIR")
        expectFailure(run(["info", fifoCk]), ExitCode.badInput, [fifoCk, "FIFO"], "info FIFO")
        expectFailure(run(["eval", "--checkpoint", "/dev/zero", "--data-dir", mnist]), ExitCode.badInput, ["/dev/zero", "character device"], "eval /dev/zero")
        let (rd, kd) = try mpirunEveryRank(2, small(mnist, AE.tempDir("o")) + ["--resume", dirCk])
        expectFailure(rd, ExitCode.badInput, [dirCk, "directory"], ranks: kd, "--resume DIR")
        let (re, ke) = try mpirunEveryRank(2, small(mnist, AE.tempDir("o")) + ["--resume", ""])
        expectFailure(re, ExitCode.usage, ["--resume"], ranks: ke, "--resume ''")
        // --resume auto skips a FIFO among the checkpoints, naming it, and starts fresh.
        let out = AE.tempDir("autofifo")
        try FileManager.default.createDirectory(atPath: out + "/checkpoints", withIntermediateDirectories: true)
        XCTAssertEqual(mkfifo(out + "/checkpoints/step-00000009.safetensors", 0o644), 0)
        let a = run(small(mnist, out) + ["--resume", "auto"])
        XCTAssertFalse(a.timedOut)
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertTrue(a.stderr.contains("skipping invalid checkpoint") && a.stderr.contains("FIFO"), a.stderr)
    }

    // MARK: 5. outputs never replace special files

    func isFIFO(_ p: String) -> Bool { var st = stat(); return lstat(p, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO }
    func isChar(_ p: String) -> Bool { var st = stat(); return lstat(p, &st) == 0 && st.st_mode & S_IFMT == S_IFCHR }
    func isLink(_ p: String) -> Bool { var st = stat(); return lstat(p, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK }

    func testOutputsNeverReplaceSpecialFiles() throws {
        let mnist = try AE.requireMNIST()
        let (out, ck, _) = try trainedCheckpoint(mnist)
        let dir = AE.tempDir("outs")
        let enc = ["encode", "--checkpoint", ck, "--data-dir", mnist, "--limit", "50"]
        // A FIFO with a reader (this test, which opened it first) gets the .npy in place and stays a FIFO.
        let fifo = dir + "/codes.npy"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let rfd = open(fifo, O_RDONLY | O_NONBLOCK)
        XCTAssertGreaterThanOrEqual(rfd, 0)
        let r1 = run(enc + ["--output", fifo])  // 728 bytes: fits the pipe buffer
        XCTAssertEqual(r1.status, 0, r1.stderr)
        var got = [UInt8](repeating: 0, count: 4096)
        let n = read(rfd, &got, got.count)
        close(rfd)
        XCTAssertTrue(isFIFO(fifo), "the FIFO was replaced")
        XCTAssertEqual(try NPY.decode(Data(got.prefix(max(n, 0))), path: fifo).shape, [50, 3])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/codes.labels.npy"), "labels beside a FIFO")
        // A FIFO without a reader: an error, not a hang.
        let lonely = dir + "/lonely.npy"
        XCTAssertEqual(mkfifo(lonely, 0o644), 0)
        expectFailure(run(enc + ["--output", lonely]), ExitCode.io, [lonely, "FIFO"], "FIFO without a reader")
        XCTAssertTrue(isFIFO(lonely))
        // A character device (a private /dev/null node, so that nothing of the system's is at risk).
        if getuid() == 0 {
            let null = dir + "/null.npy"
            XCTAssertEqual(AE.exec([try XCTUnwrap(AE.which("mknod")), null, "c", "1", "3"]).status, 0)
            let r = run(enc + ["--output", null])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(isChar(null), "the character device was replaced by a regular file")
        } else {
            XCTAssertTrue(isChar("/dev/null"))
            let r = run(enc + ["--output", "/dev/null"])  // in place: harmless without root
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        // /dev/stdout (here a private link like it, /proc/self/fd/1, so that a regression cannot
        // replace the system's /dev/stdout), redirected to a file and to a pipe: the bytes
        // arrive, nothing is replaced.
        let stdoutLink = dir + "/stdout"
        try FileManager.default.createSymbolicLink(atPath: stdoutLink, withDestinationPath: "/proc/self/fd/1")
        let viaFile = dir + "/stdout.npy", viaPipe = dir + "/pipe.npy"
        let cmd = ([HostileInputTests.bin] + enc).map { "'\($0)'" }.joined(separator: " ")
        XCTAssertEqual(AE.exec(["/bin/sh", "-c", "\(cmd) --output '\(stdoutLink)' > '\(viaFile)'"]).status, 0)
        XCTAssertEqual(try NPY.read(URL(fileURLWithPath: viaFile)).shape, [50, 3])
        XCTAssertEqual(AE.exec(["/bin/sh", "-c", "\(cmd) --output '\(stdoutLink)' | cat > '\(viaPipe)'"]).status, 0)
        XCTAssertEqual(try NPY.read(URL(fileURLWithPath: viaPipe)).shape, [50, 3])
        XCTAssertTrue(isLink(stdoutLink), "the /dev/stdout-like link was replaced")
        XCTAssertFalse(FileManager.default.fileExists(atPath: stdoutLink + ".labels.npy"))
        // A symlink: the target is written, the link stays.
        let target = dir + "/real.npy", link = dir + "/link.npy"
        try Data("old".utf8).write(to: URL(fileURLWithPath: target))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "real.npy")
        let r3 = run(["reconstruct", "--checkpoint", ck, "--data-dir", mnist, "--limit", "20", "--output", link])
        XCTAssertEqual(r3.status, 0, r3.stderr)
        XCTAssertTrue(isLink(link), "the symlink was replaced")
        XCTAssertEqual(try NPY.read(URL(fileURLWithPath: target)).shape, [20, 28, 28])
        // Run-folder files are never written into a special file: a FIFO summary.json is refused.
        let run2 = AE.tempDir("fifo-summary")
        XCTAssertEqual(mkfifo(run2 + "/summary.json", 0o644), 0)
        let (rs, ks) = try mpirunEveryRank(2, small(mnist, run2))
        expectFailure(rs, ExitCode.io, [run2 + "/summary.json", "FIFO"], ranks: ks, "FIFO summary.json")
        XCTAssertTrue(isFIFO(run2 + "/summary.json"))
        XCTAssertEqual(run(["info", try XCTUnwrap(AE.latestCheckpoint(run2))]).status, 0, "the run's checkpoint must be loadable")
        _ = out
    }

    // MARK: 6. empty splits and classes, the other dataset's files

    func testEmptySplitsAndEmptyClassAreInputErrors() throws {
        let mnist = try AE.requireMNIST()
        let noImages = Self.be32(0x803) + Self.be32(0) + Self.be32(28) + Self.be32(28), noLabels = Self.be32(0x801) + Self.be32(0)
        let d1 = try dataDir(mnist, "empty-train", replace: ["train-images-idx3-ubyte": noImages, "train-labels-idx1-ubyte": noLabels])
        let (r1, k1) = try mpirunEveryRank(2, small(d1, AE.tempDir("o")))
        expectFailure(r1, ExitCode.badInput, [d1 + "/train-images-idx3-ubyte", "no images"], ranks: k1, "zero training images")
        let d2 = try dataDir(mnist, "empty-test", replace: ["t10k-images-idx3-ubyte": noImages, "t10k-labels-idx1-ubyte": noLabels])
        let (r2, k2) = try mpirunEveryRank(2, small(d2, AE.tempDir("o")))
        expectFailure(r2, ExitCode.badInput, [d2 + "/t10k-images-idx3-ubyte", "no images"], ranks: k2, "zero test images")
        // Training labels without a single 3 (all the first 256 images are relabelled 0).
        let labels = Self.be32(0x801) + Self.be32(60000) + [UInt8](repeating: 0, count: 60000)
        let d3 = try dataDir(mnist, "no-class", replace: ["train-labels-idx1-ubyte": labels])
        let (r3, k3) = try mpirunEveryRank(2, ["anomaly", "--normal-class", "3"] + small(d3, AE.tempDir("o")))
        expectFailure(r3, ExitCode.badInput, ["--normal-class 3", d3 + "/train-labels-idx1-ubyte"], ranks: k3, "empty normal class")
        // With a checkpoint too, an out-of-range class is a usage error, not a crash.
        let (_, ck, _) = try trainedCheckpoint(mnist)
        expectFailure(run(["anomaly", "--normal-class", "10", "--checkpoint", ck] + small(mnist, AE.tempDir("o"))),
                      ExitCode.usage, ["--normal-class 10"], "anomaly --normal-class 10 --checkpoint")
    }

    func testTheOtherDatasetsFilesGetOneWarning() throws {
        let mnist = try AE.requireMNIST()
        let fashion = DataSource.debianFashionDir
        guard FileManager.default.fileExists(atPath: fashion + "/train-images-idx3-ubyte.gz") else {
            throw TestFailure("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; Launch/test.sh installs it)")
        }
        let args = ["--train-limit", "256", "--test-limit", "64", "--max-steps", "1", "--no-report"]
        for (flag, dir, other) in [("mnist", fashion, "fashion-mnist"), ("fashion-mnist", mnist, "mnist")] {
            let (r, k) = try mpirunEveryRank(2, ["--dataset", flag, "--data-dir", dir, "--out", AE.tempDir("o")] + args, timeout: 60)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(k, [0, 0])
            let warnings = r.stderr.split(separator: "\n").filter { $0.contains("warning:") }
            XCTAssertEqual(warnings.count, 1, r.stderr)
            XCTAssertTrue(warnings.first?.contains("is \(other)") == true && warnings.first?.contains("--dataset is \(flag)") == true, r.stderr)
        }
        // Other IDX content of the right shape (here: MNIST with changed pixels) is used silently.
        let img = Self.be32(0x803) + Self.be32(10000) + Self.be32(28) + Self.be32(28) + [UInt8](repeating: 9, count: 10000 * 784)
        let d = try dataDir(mnist, "kmnist-like", replace: ["t10k-images-idx3-ubyte": img])
        let r = run(["--dataset", "mnist", "--data-dir", d, "--out", AE.tempDir("o")] + args, timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stderr.contains("warning:"), r.stderr)
    }

    // MARK: 7. exit codes, no silent acceptance

    func testNumericFlagsRejectNaNInfAndNonsense() throws {
        let mnist = try AE.requireMNIST()
        let base = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "256", "--test-limit", "64", "--max-steps", "2", "--no-report"]
        let cases: [[String]] = [
            ["--weight-decay", "nan"], ["--weight-decay", "inf"], ["--collective-timeout", "nan"], ["--collective-timeout", "inf"],
            ["--bucket-size", "inf"], ["--bucket-size", "nan"], ["--eps", "inf"], ["--eps", "nan"], ["--lr", "inf"],
            ["--beta1", "nan"], ["--beta2", "1"], ["--encoder", "64,,32", "--latent", "3"], ["--encoder", "64,", "--latent", "3"],
            ["--sparsity-weight", "inf"], ["--contractive-weight", "nan"], ["--noise", "gaussian:nan"], ["--noise", "mask:inf"],
            ["--resume", ""], ["--out", ""], ["--data-dir", ""],
        ]
        for extra in cases {
            let r = run(merge(base + ["--out", AE.tempDir("o")], extra))
            expectFailure(r, ExitCode.usage, [extra[0]], extra.joined(separator: " "))
        }
        // Every rank, under mpirun (the watchdog's timeout is read before MPI starts).
        for extra in [["--weight-decay", "nan"], ["--collective-timeout", "nan"]] {
            let (r, k) = try mpirunEveryRank(2, merge(base + ["--out", AE.tempDir("o")], extra))
            expectFailure(r, ExitCode.usage, [extra[0]], ranks: k, "np 2: " + extra.joined(separator: " "))
        }
        for (args, flag) in [(["bench", "--threads", "0"], "--threads 0"), (["bench", "--threads=-2"], "--threads -2"),
                             (["pca", "--components", "0"], "--components 0"), (["eval", "--checkpoint", ""], "--checkpoint"),
                             (["encode", "--checkpoint", "x.safetensors", "--output", ""], "--output")] {
            expectFailure(run(args), ExitCode.usage, [flag], args.joined(separator: " "))
        }
    }

    // MARK: 8. signals

    /// Spawns aetrain with `blocked` signals blocked (the mask survives exec), so that a signal
    /// sent at once stays pending until aetrain installs its handlers.
    func spawn(_ args: [String], blocked: [Int32], stderrTo path: String) throws -> pid_t {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var set = sigset_t()
        sigemptyset(&set)
        for s in blocked { sigaddset(&set, s) }
        posix_spawnattr_setsigmask(&attr, &set)
        var def = sigset_t()
        sigemptyset(&def)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGUSR1] { sigaddset(&def, s) }
        posix_spawnattr_setsigdefault(&attr, &def)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 2, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let argv = ([HostileInputTests.bin] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        let envp = env.map { strdup("\($0)=\($1)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, HostileInputTests.bin, &actions, &attr, argv, envp)
        guard rc == 0 else { throw AETError("posix_spawn failed: \(rc)") }
        return pid
    }

    /// Waits for `pid` (at most `timeout` s; then kills it): the exit code, or 128 + signal.
    func wait(_ pid: pid_t, timeout: Double = 30) -> (code: Int32, seconds: Double) {
        let t0 = Date()
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date().timeIntervalSince(t0) > timeout { kill(pid, SIGKILL); waitpid(pid, &status, 0); return (-1, timeout) }
            usleep(5000)
        }
        let sig = status & 0x7f
        return (sig == 0 ? (status >> 8) & 0xff : 128 + sig, Date().timeIntervalSince(t0))
    }

    /// Polls /proc until the process catches `sig` (its handlers are installed).
    func waitForHandler(_ pid: pid_t, _ sig: Int32) -> Bool {
        for _ in 0..<2000 {
            if let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
               let line = s.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
               let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16),
               mask & (1 << UInt64(sig - 1)) != 0 { return true }
            usleep(1000)
        }
        return false
    }

    func testSignalsBeforeMainAndSIGHUPAndASecondSIGINT() throws {
        let mnist = try AE.requireMNIST()
        let args = ["--dataset", "mnist", "--data-dir", mnist, "--epochs", "1", "--max-steps", "200", "--test-limit", "500",
                    "--log-every", "1", "--no-report"]
        // A SIGTERM sent at the very start (here: before exec is even done) stops the run at its
        // first step boundary with a checkpoint and exit 75, instead of killing it.
        for sig in [SIGTERM, SIGUSR1] {
            let out = AE.tempDir("early"), err = out + ".err"
            let pid = try spawn(args + ["--out", out], blocked: [sig], stderrTo: err)
            kill(pid, sig)
            let (code, _) = wait(pid)
            let text = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
            XCTAssertEqual(code, ExitCode.preempted, "signal \(sig) at start: \(text.suffix(400))")
            XCTAssertTrue(text.contains("stopped by \(Signals.name(sig))"), text)
            XCTAssertEqual(run(["info", try XCTUnwrap(AE.latestCheckpoint(out))]).status, 0)
        }
        // SIGHUP is handled like SIGTERM.
        let out = AE.tempDir("hup"), err = out + ".err"
        let pid = try spawn(args + ["--out", out], blocked: [], stderrTo: err)
        XCTAssertTrue(waitForHandler(pid, SIGHUP), "no SIGHUP handler installed")
        kill(pid, SIGHUP)
        let (code, secs) = wait(pid)
        let text = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        XCTAssertEqual(code, ExitCode.preempted, text.suffix(400) + "")
        XCTAssertTrue(text.contains("stopped by SIGHUP"), text)
        XCTAssertLessThan(secs, 10)
        let ck = try XCTUnwrap(AE.latestCheckpoint(out))
        XCTAssertEqual(run(["info", ck]).status, 0)
        // A second SIGINT: one line, exit 130 at once (the first only asked for a checkpoint).
        let out2 = AE.tempDir("int2"), err2 = out2 + ".err"
        let pid2 = try spawn(args + ["--out", out2], blocked: [], stderrTo: err2)
        XCTAssertTrue(waitForHandler(pid2, SIGINT), "no SIGINT handler installed")
        kill(pid2, SIGINT)
        usleep(20_000)
        kill(pid2, SIGINT)
        let (code2, secs2) = wait(pid2)
        let text2 = (try? String(contentsOfFile: err2, encoding: .utf8)) ?? ""
        XCTAssertEqual(code2, 130, text2.suffix(400) + "")
        XCTAssertLessThan(secs2, 10)
        XCTAssertEqual(text2.split(separator: "\n").filter { $0.contains("error:") },
                       ["error: second SIGINT: stopping at once, without a checkpoint (exit 130)"], text2)
        // Commands that do not train keep the default action: a SIGTERM ends them as usual.
        let e3 = AE.tempDir("info") + ".err"
        let pid3 = try spawn(["pca", "--dataset", "mnist", "--data-dir", mnist, "--components", "5"], blocked: [SIGTERM], stderrTo: e3)
        kill(pid3, SIGTERM)
        XCTAssertEqual(wait(pid3).code, 128 + SIGTERM)
    }
}
