import Foundation

/// A model of one training step on N nodes × L ranks per node at global batch B, from measured
/// figures: the compute per sample and per step (a short run's summary.json `ms_per_step`), Adam's
/// time per parameter, and the communication costs of the machine (`aetrain comm-sweep`): the
/// latency α and time per byte β of a message between nodes, a barrier and the memory bandwidth
/// inside a node. It predicts samples/s and efficiency for each gradient exchange
/// (`aetrain scale-model`; README "Scaling model").
///
/// One step = compute + Adam + exchange, with p = N·L ranks, b = ⌈B/p⌉ samples per rank and n =
/// 4(P + 8) bytes of gradient (P parameters and the extra slots):
///
/// - compute = (c₀ + c·b) · max(1, L/cores): per-step overhead plus per-sample time; ranks beyond
///   the node's cores time-share them.
/// - Adam = a·P on every rank for `allreduce`; a·P/L (each rank its slice) for `shared` and
///   `hierarchical`; times the same oversubscription factor.
/// - exchange:
///   - `allreduce`, one MPI all-reduce over all p ranks: Open MPI picks recursive doubling for
///     small messages and Rabenseifner's reduce-scatter + all-gather for large ones, so on one node
///     min(⌈log₂p⌉(α + nβ), 2⌈log₂p⌉α + 2(p−1)/p · nβ) (Thakur, Rabenseifner and Gropp 2005). Across
///     nodes (ranks numbered node by node) the steps at a distance of L ranks or more cross the
///     network, where the L ranks of a node share its link: Rabenseifner sends 2(1 − 1/N)·n bytes
///     per rank across, so 2(1 − 1/N)·n·L per node (recursive doubling ⌈log₂N⌉·n·L), plus its
///     steps inside the node at the node's α and β.
///   - `shared` (one node): two node barriers (⌈log₂L⌉ rounds each) plus the memory traffic of
///     the fused pass: each rank reads its 1/L slice of the L gradients (4P bytes) and copies the
///     other slices back (4P(L−1)/L bytes read and as many written), at the memory's time per byte.
///   - `hierarchical`: the node part of `shared` (plus writing the node sum, 4P/L bytes) and a ring
///     all-reduce of each slice across the N nodes: 2(N−1) messages of 4(P/L + 8)/N bytes each on
///     L rings at once, 2(N−1)α + 2(N−1)/N · 4(P + 8L) β per node.
///
/// Samples/s = B / step; efficiency = samples/s ÷ (N × samples/s on one node) for the same L.
public struct ScalingModel: Codable, Sendable {
    /// Seconds per sample of forward + backward + data on one rank, and per step (fixed part).
    public var computePerSample: Double
    public var computePerStep: Double
    /// Seconds of Adam per parameter.
    public var adamPerParameter: Double
    /// Parameters of the model.
    public var parameters: Int
    /// Message latency (s) and time per byte (s/B) of the network between nodes; for one node's
    /// shared memory, the same for a message between two of its ranks.
    public var alphaNetwork: Double
    public var betaNetwork: Double
    public var alphaNode: Double
    public var betaNode: Double
    /// A node barrier (s), and memory traffic time per byte (s/B) for one rank.
    public var barrier: Double
    public var betaMemory: Double
    /// Cores per node (ranks beyond them time-share; fractional for pretend nodes sharing one
    /// machine's cores).
    public var coresPerNode: Double

    public init(computePerSample: Double, computePerStep: Double, adamPerParameter: Double, parameters: Int,
                alphaNetwork: Double, betaNetwork: Double, alphaNode: Double, betaNode: Double,
                barrier: Double, betaMemory: Double, coresPerNode: Double) {
        self.computePerSample = computePerSample
        self.computePerStep = computePerStep
        self.adamPerParameter = adamPerParameter
        self.parameters = parameters
        self.alphaNetwork = alphaNetwork
        self.betaNetwork = betaNetwork
        self.alphaNode = alphaNode
        self.betaNode = betaNode
        self.barrier = barrier
        self.betaMemory = betaMemory
        self.coresPerNode = coresPerNode
    }

    public enum Scheme: String, Codable, CaseIterable, Sendable { case allreduce, shared, hierarchical }

    /// One step's predicted time, in seconds, by part.
    public struct Step: Codable, Equatable, Sendable {
        public var compute: Double
        public var adam: Double
        public var exchange: Double
        public var total: Double { compute + adam + exchange }
    }

    /// The scheme `--grad-sync auto` picks for N nodes × L ranks (README "Running on a cluster").
    public static func autoScheme(nodes: Int, ranksPerNode: Int) -> Scheme? {
        if nodes * ranksPerNode == 1 { return nil }
        if nodes == 1 { return .shared }
        return ranksPerNode > 1 ? .hierarchical : .allreduce
    }

    static let extraSlots = 8

    /// ⌈log₂ p⌉.
    public static func log2Ceil(_ p: Int) -> Double { p <= 1 ? 0 : Double(Int.bitWidth - (p - 1).leadingZeroBitCount) }

    /// A flat all-reduce of `bytes` over `p` ranks of one node (message latency α, time per byte β).
    public static func allreduceSeconds(ranks p: Int, bytes n: Double, alpha: Double, beta: Double) -> Double {
        guard p > 1 else { return 0 }
        let lg = log2Ceil(p)
        let doubling = lg * (alpha + n * beta)
        let rabenseifner = 2 * lg * alpha + 2 * Double(p - 1) / Double(p) * n * beta
        return min(doubling, rabenseifner)
    }

    /// A flat all-reduce of `bytes` over N nodes × L ranks: the steps across nodes at the
    /// network's α and β with the node's L ranks sharing its link, the others at the node's.
    public static func allreduceSeconds(nodes N: Int, ranksPerNode L: Int, bytes n: Double, alpha: Double, beta: Double,
                                        alphaNode: Double, betaNode: Double) -> Double {
        guard N > 1 else { return allreduceSeconds(ranks: L, bytes: n, alpha: alphaNode, beta: betaNode) }
        let lgN = log2Ceil(N), lgL = log2Ceil(L), l = Double(L), nn = Double(N)
        let doubling = lgN * (alpha + n * beta * l) + lgL * (alphaNode + n * betaNode)
        let rabenseifner = 2 * lgN * alpha + 2 * (1 - 1 / nn) * n * beta * l
            + 2 * lgL * alphaNode + 2 * (1 / nn) * (1 - 1 / l) * n * betaNode
        return min(doubling, rabenseifner)
    }

    /// The ring all-reduce of `bytes` over `p` ranks (`MPICommunicator.ringAllreduceSum`).
    public static func ringSeconds(ranks p: Int, bytes n: Double, alpha: Double, beta: Double) -> Double {
        guard p > 1 else { return 0 }
        return 2 * Double(p - 1) * alpha + 2 * Double(p - 1) / Double(p) * n * beta
    }

    /// The node part of the shared and hierarchical exchanges on L ranks: two barriers and the
    /// memory traffic (with `nodeSum`, the node sum written out for the network).
    func nodeSeconds(ranksPerNode L: Int, nodeSum: Bool) -> Double {
        guard L > 1 else { return 0 }
        let P = Double(parameters), l = Double(L)
        // Read the slice of L gradients (4P), copy the other slices (read and write), write the node sum.
        let bytes = 4 * P + 2 * 4 * P * (l - 1) / l + (nodeSum ? 4 * P / l : 0)
        return 2 * barrier * ScalingModel.log2Ceil(L) + bytes * betaMemory
    }

    /// The step at N nodes × L ranks and global batch B with `scheme`; nil when the scheme does
    /// not apply (shared across nodes) or the batch has fewer samples than ranks.
    public func step(nodes N: Int, ranksPerNode L: Int, globalBatch B: Int, scheme: Scheme) -> Step? {
        let p = N * L
        guard p >= 1, L >= 1, B >= p else { return nil }
        if scheme == .shared && N > 1 { return nil }
        let b = Double((B + p - 1) / p)
        let over = max(1, Double(L) / max(coresPerNode, 1e-9))
        let compute = (computePerStep + computePerSample * b) * over
        let P = Double(parameters)
        let n = 4 * (P + Double(ScalingModel.extraSlots))
        var adam = adamPerParameter * P * over
        var exchange = 0.0
        switch scheme {
        case .allreduce:
            exchange = ScalingModel.allreduceSeconds(nodes: N, ranksPerNode: L, bytes: n, alpha: alphaNetwork, beta: betaNetwork,
                                                     alphaNode: alphaNode, betaNode: betaNode)
        case .shared:
            adam /= Double(L)
            exchange = nodeSeconds(ranksPerNode: L, nodeSum: false)
        case .hierarchical:
            adam /= Double(L)
            let slice = 4 * (P / Double(L) + Double(ScalingModel.extraSlots))
            // L rings at once share the node's link: L times one ring's bytes per node.
            exchange = nodeSeconds(ranksPerNode: L, nodeSum: true)
                + ScalingModel.ringSeconds(ranks: N, bytes: slice, alpha: alphaNetwork, beta: betaNetwork * Double(L))
        }
        return Step(compute: compute, adam: adam, exchange: exchange)
    }

    /// Samples per second at N × L and batch B with `scheme` (nil where `step` is nil).
    public func samplesPerSecond(nodes N: Int, ranksPerNode L: Int, globalBatch B: Int, scheme: Scheme) -> Double? {
        step(nodes: N, ranksPerNode: L, globalBatch: B, scheme: scheme).map { Double(B) / $0.total }
    }

    /// The compute terms fitted to measured runs: (samples per rank, seconds of compute per step).
    /// One run: all per sample; two or more with different per-rank batches: least squares.
    public static func fitCompute(_ points: [(samples: Double, seconds: Double)]) -> (perStep: Double, perSample: Double) {
        let xs = points.map(\.samples), ys = points.map(\.seconds)
        guard Set(xs).count >= 2 else {
            let s = zip(xs, ys).map { $1 / max($0, 1) }
            return (0, s.reduce(0, +) / Double(max(1, s.count)))
        }
        let (a, b) = leastSquares(xs, ys)
        return b > 0 && a >= 0 ? (a, b) : (0, zip(xs, ys).map { $1 / $0 }.reduce(0, +) / Double(xs.count))
    }

    /// y ≈ a + b·x, each point weighted by 1/y² (relative errors: small messages fix a, large ones b).
    public static func leastSquares(_ x: [Double], _ y: [Double], relative: Bool = false) -> (a: Double, b: Double) {
        var sw = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0
        for (xi, yi) in zip(x, y) {
            let w = relative ? 1 / max(yi * yi, 1e-300) : 1
            sw += w; sx += w * xi; sy += w * yi; sxx += w * xi * xi; sxy += w * xi * yi
        }
        let d = sw * sxx - sx * sx
        guard d != 0 else { return (sy / max(sw, 1e-300), 0) }
        let b = (sw * sxy - sx * sy) / d
        return ((sy - b * sx) / sw, b)
    }
}
