import ArgumentParser
import AutoencoderCore
import Foundation

/// `aetrain comm-sweep`: the machine's communication costs for the scaling model (under mpirun).
struct CommSweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comm-sweep",
        abstract: "Under mpirun: time MPI_Allreduce and the ring all-reduce from 8 B to 4 MB, a node barrier and memory copies; print the fitted α and β as JSON (input of scale-model).")
    @Option(help: "Also write the JSON to this file.") var output: String?

    func run() throws {
        let out = output
        if let o = out, o.isEmpty { throw AETError.usage("--output: empty path") }
        Job.run { comm in
            let r = try CommSweep.run(comm: comm)
            guard comm.isRoot else { return }
            let text = try JSON.encode(r, pretty: true)
            print(text)
            if let o = out { try AtomicFile.write((text + "\n").data(using: .utf8)!, to: URL(fileURLWithPath: o)) }
            printError(String(format: "comm-sweep: %d ranks (%d per node): message α %.2f µs, β %.3f ns/B (%.2f GB/s); MPI_Allreduce α %.2f µs, β %.3f ns/B; node barrier %.2f µs; memory %.2f GB/s per rank",
                              r.worldSize, r.ranksPerNode, r.alpha * 1e6, r.beta * 1e9, 1e-9 / max(r.beta, 1e-30),
                              r.alphaAllreduce * 1e6, r.betaAllreduce * 1e9, r.barrierSeconds * 1e6, 1e-9 / max(r.memorySecondsPerByte, 1e-30)))
        }
    }
}

/// `aetrain scale-model`: predicted samples/s and efficiency on N nodes × L ranks.
struct ScaleModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale-model",
        abstract: "Predict samples/s and scaling efficiency on 1-64 nodes from a run's summary.json (compute) and comm-sweep's JSON (communication).")
    @Option(name: .customLong("summary"), help: "summary.json of a short run on this machine (repeat for several; runs at different per-rank batches fit a per-step overhead).")
    var summaries: [String] = []
    @Option(help: "JSON written by `aetrain comm-sweep`.") var sweep: String
    @Option(parsing: .unconditional, help: "Network latency per message in seconds (default: the sweep's, i.e. this machine's shared memory).") var alpha: Double?
    @Option(parsing: .unconditional, help: "Network time per byte in seconds, of one node's link (default: the sweep's). 100 Gb/s: 8e-11.") var beta: Double?
    @Option(parsing: .unconditional, help: "Ranks per node (default: the sweep's).") var ranksPerNode: Int?
    @Option(parsing: .unconditional, help: "Cores per node; ranks beyond them time-share (default: --ranks-per-node).") var coresPerNode: Int?
    @Option(parsing: .unconditional, help: "Global batch (default: the first summary's).") var batchSize: Int?
    @Option(help: "Node counts, comma-separated.") var nodes: String = "1,2,4,8,16,32,64"
    @Option(name: .customLong("compare"), help: "summary.json of a measured run to set beside its prediction (repeatable).")
    var measured: [String] = []
    @Option(parsing: .unconditional, help: "For --compare runs on one machine (pretend nodes): the cores all their ranks share (default: --cores-per-node).")
    var machineCores: Int?
    @Flag(help: "Print JSON instead of tables.") var json = false

    func run() throws {
        guard !summaries.isEmpty else { throw AETError.usage("--summary: give at least one summary.json of a run on this machine") }
        let runs = try summaries.map { try Self.read($0) }
        let sw: CommSweep.Result
        do { sw = try JSONDecoder().decode(CommSweep.Result.self, from: Data(contentsOf: URL(fileURLWithPath: sweep))) } catch {
            throw AETError.data("--sweep \(sweep): not the JSON of aetrain comm-sweep (\(error.localizedDescription))")
        }
        for (flag, v) in [("--alpha", alpha), ("--beta", beta)] where v.map({ !($0.isFinite && $0 >= 0) }) ?? false {
            throw AETError.usage("\(flag) \(v!): must be a finite number ≥ 0 (seconds)")
        }
        let L = ranksPerNode ?? sw.ranksPerNode
        guard (1...65_536).contains(L) else { throw AETError.usage("--ranks-per-node \(L): must be in 1...65536") }
        let cores = coresPerNode ?? L
        guard (1...65_536).contains(cores) else { throw AETError.usage("--cores-per-node \(cores): must be in 1...65536") }
        if let m = machineCores, !(1...65_536).contains(m) { throw AETError.usage("--machine-cores \(m): must be in 1...65536") }
        let nodeList = try nodes.split(separator: ",").map { s -> Int in
            guard let n = Int(s.trimmingCharacters(in: .whitespaces)), (1...1_000_000).contains(n) else {
                throw AETError.usage("--nodes \(nodes): expected node counts like 1,2,4,8")
            }
            return n
        }
        let B = batchSize ?? runs[0].batch
        guard B >= 1 else { throw AETError.usage("--batch-size \(B): must be positive") }
        let fit = ScalingModel.fitCompute(runs.map { ($0.perRank, $0.computeSeconds) })
        let adam = runs.map { $0.adamSeconds / $0.adamParameters }.min() ?? 0
        let model = ScalingModel(computePerSample: fit.perSample, computePerStep: fit.perStep, adamPerParameter: adam,
                                 parameters: runs[0].parameters, alphaNetwork: alpha ?? sw.alpha, betaNetwork: beta ?? sw.beta,
                                 alphaNode: sw.alphaAllreduce, betaNode: sw.betaAllreduce, barrier: sw.barrierSeconds / max(1, ScalingModel.log2Ceil(sw.ranksPerNode)),
                                 betaMemory: sw.memorySecondsPerByte, coresPerNode: Double(cores))
        var rows: [[String: Any]] = []
        let one = ScalingModel.Scheme.allCases.map { model.samplesPerSecond(nodes: 1, ranksPerNode: L, globalBatch: B, scheme: $0) }
        for n in nodeList {
            var row: [String: Any] = ["nodes": n, "ranks": n * L, "samples_per_rank": Double(B) / Double(n * L)]
            for (i, s) in ScalingModel.Scheme.allCases.enumerated() {
                guard let x = model.samplesPerSecond(nodes: n, ranksPerNode: L, globalBatch: B, scheme: s) else { continue }
                let step = model.step(nodes: n, ranksPerNode: L, globalBatch: B, scheme: s)!
                var e: [String: Any] = ["samples_per_second": x, "ms_per_step": step.total * 1e3, "exchange_ms": step.exchange * 1e3]
                // Against N times one node with the same ranks per node (auto's choice there: shared).
                if let base = one[1] ?? one[i] { e["efficiency"] = x / (Double(n) * base) }
                row[s.rawValue] = e
            }
            if let a = ScalingModel.autoScheme(nodes: n, ranksPerNode: L) { row["auto"] = a.rawValue }
            rows.append(row)
        }
        var comparisons: [[String: Any]] = []
        for path in measured {
            let m = try Self.read(path)
            let n = m.nodes, l = (m.world + n - 1) / n
            guard let scheme = ScalingModel.Scheme(rawValue: m.gradSync == "none" ? "allreduce" : m.gradSync) else { continue }
            var onMachine = model
            if let mc = machineCores { onMachine.coresPerNode = Double(mc) / Double(n) }
            let predicted = onMachine.samplesPerSecond(nodes: n, ranksPerNode: l, globalBatch: m.batch, scheme: scheme)
            comparisons.append(["run": path, "nodes": n, "ranks_per_node": l, "grad_sync": m.gradSync, "global_batch": m.batch,
                                "measured": m.samplesPerSecond, "predicted": predicted ?? Double.nan])
        }
        if json {
            print(JSON.encode(["model": ["compute_seconds_per_sample": model.computePerSample, "compute_seconds_per_step": model.computePerStep,
                                         "adam_seconds_per_parameter": model.adamPerParameter, "parameters": model.parameters,
                                         "alpha": model.alphaNetwork, "beta": model.betaNetwork, "alpha_node": model.alphaNode,
                                         "beta_node": model.betaNode, "barrier_seconds_per_round": model.barrier,
                                         "memory_seconds_per_byte": model.betaMemory, "cores_per_node": cores,
                                         "ranks_per_node": L, "global_batch": B] as [String: Any],
                               "predictions": rows, "comparisons": comparisons], pretty: true))
            return
        }
        print(String(format: "scaling model: %d parameters, global batch %d, %d ranks per node (%d cores)", model.parameters, B, L, cores))
        print(String(format: "  compute %.2f µs/step + %.3f µs/sample; Adam %.3f ns/parameter", model.computePerStep * 1e6,
                     model.computePerSample * 1e6, model.adamPerParameter * 1e9))
        print(String(format: "  network α %.2f µs, β %.4f ns/B (%.2f GB/s per node); node barrier %.2f µs per round, memory %.2f GB/s",
                     model.alphaNetwork * 1e6, model.betaNetwork * 1e9, 1e-9 / max(model.betaNetwork, 1e-30), model.barrier * 1e6,
                     1e-9 / max(model.betaMemory, 1e-30)))
        print("")
        print("nodes  ranks  samples/rank |  allreduce  eff   exch ms |     shared  eff   exch ms | hierarchical  eff  exch ms | auto")
        print(String(repeating: "-", count: 118))
        for r in rows {
            func cell(_ k: String, width: Int) -> String {
                guard let e = r[k] as? [String: Any], let x = e["samples_per_second"] as? Double else {
                    return String(repeating: " ", count: width - 1) + "-" + String(repeating: " ", count: 16)
                }
                return String(format: "%\(width).0f %4.0f%% %8.3f", x, 100 * ((e["efficiency"] as? Double) ?? .nan), (e["exchange_ms"] as? Double) ?? .nan)
            }
            print(String(format: "%5d %6d %13.2f", r["nodes"] as! Int, r["ranks"] as! Int, r["samples_per_rank"] as! Double)
                  + " | " + cell("allreduce", width: 10) + " | " + cell("shared", width: 10) + " | " + cell("hierarchical", width: 11)
                  + " | " + ((r["auto"] as? String) ?? "none"))
        }
        if !comparisons.isEmpty {
            print("")
            print("measured run (its folder)       nodes × ranks  grad_sync      batch   measured  predicted  pred/meas")
            for c in comparisons {
                let meas = c["measured"] as! Double, pred = c["predicted"] as! Double
                let name = URL(fileURLWithPath: c["run"] as! String).deletingLastPathComponent().lastPathComponent
                print(String(format: "%-30@ %6d × %-5d  %-12@ %6d %10.0f %10.0f %9.2f", String(name.prefix(30)) as NSString,
                             c["nodes"] as! Int, c["ranks_per_node"] as! Int, c["grad_sync"] as! String as NSString, c["global_batch"] as! Int,
                             meas, pred, pred / meas))
            }
        }
    }

    /// The figures of one run's summary.json.
    struct Run {
        var world: Int, nodes: Int, batch: Int, parameters: Int, gradSync: String
        var computeSeconds: Double, adamSeconds: Double, samplesPerSecond: Double
        var perRank: Double { Double((batch + world - 1) / world) }
        /// Parameters each rank's Adam covers.
        var adamParameters: Double { gradSync == "shared" || gradSync == "hierarchical" ? Double(parameters) * Double(nodes) / Double(world) : Double(parameters) }
    }

    static func read(_ path: String) throws -> Run {
        guard let data = FileManager.default.contents(atPath: path) else { throw AETError.data("\(path): cannot read (no such file?)") }
        let s: RunSummary
        do { s = try JSONDecoder().decode(RunSummary.self, from: data) } catch {
            throw AETError.data("\(path): not an aetrain summary.json (\(error.localizedDescription))")
        }
        guard let w = s.worldSize, let b = s.globalBatchSize, let p = s.paramCount, let ms = s.msPerStep, let g = s.gradSync,
              let x = s.samplesPerSecond, w >= 1, b >= 1, p >= 1 else {
            throw AETError.data("\(path): summary.json of a training run needed (world_size, global_batch_size, param_count, ms_per_step, grad_sync)")
        }
        return Run(world: w, nodes: max(1, s.nodes ?? 1), batch: b, parameters: p, gradSync: g,
                   computeSeconds: (ms.data + ms.forward + ms.backward) / 1000, adamSeconds: ms.optimizer / 1000, samplesPerSecond: x)
    }
}

/// Hidden: the node's shared copy of the data holds exactly what a private decode gives (for the
/// tests, under mpirun).
struct DataSelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "selftest-data", shouldDisplay: false)
    @Option var dataset: DatasetName = .mnist
    @Option var dataDir: String
    @Option(parsing: .unconditional) var trainLimit: Int?
    @Option(parsing: .unconditional) var testLimit: Int?

    func run() throws {
        let d = self
        Job.run { comm in
            var config = TrainConfig(model: ModelSpec.preset("mlp3")!)
            config.dataset = d.dataset
            config.dataDir = d.dataDir
            config.trainLimit = d.trainLimit
            config.testLimit = d.testLimit
            let report = try NodeSharedData.selfTest(config, comm: comm)
            var v = [report.identical ? 0.0 : 1.0, report.shared ? 1 : 0]
            comm.allreduceSum(&v, count: 2, what: "result")
            printError((comm.rank == 0 ? "" : "rank \(comm.rank): ") + "data \(report.shared ? "node-shared" : "own copy"), \(report.identical ? "identical" : "DIFFERENT: " + report.detail)")
            if v[0] > 0 { throw AETError("data selftest failed", exitCode: 1, allRanks: true) }
            if comm.isRoot { print("data selftest ok size \(comm.size) shared \(Int(v[1]))") }
        }
    }
}
