import Foundation

/// Test hooks: faults that the tests (Tests/aetrainTests) and the cluster scripts (Tests/Cluster)
/// inject into a real run through environment variables. This is the only place that reads
/// them, once, at start-up; a production run sets none, and each hook costs one comparison
/// where it could fire.
///
/// | variable | value | effect |
/// | --- | --- | --- |
/// | `AETRAIN_TEST_NAN_GRAD` | `RANK:STEP` | after backward of step STEP (1-based), that rank's last gradient becomes NaN (`--on-nan` tests) |
/// | `AETRAIN_TEST_PERTURB` | `RANK:STEP` | at the `--check-sync` after step STEP, that rank's first parameter drifts by 1e-3 |
/// | `AETRAIN_TEST_CRASH_AFTER_TEMP` | path prefix | an atomic write to a path with that prefix exits (code 99) after its temp file is written and synced, before the rename (`AtomicFile`) |
/// | `AETRAIN_TEST_RANKS_PER_NODE` | K ≥ 1 | the ranks act as pretend nodes of K consecutive ranks (`NodeTopology`): np 4 with K = 2 runs as 2 nodes × 2 ranks, K = 3 as 3 + 1 |
public struct FaultInjection: Sendable {
    /// A rank and a 1-based step.
    public struct RankStep: Equatable, Sendable {
        public var rank: Int
        public var step: Int
        public init(rank: Int, step: Int) {
            self.rank = rank
            self.step = step
        }

        /// "RANK:STEP", or nil.
        init?(_ text: String?) {
            guard let f = text?.split(separator: ":", omittingEmptySubsequences: false), f.count == 2,
                  let r = Int(f[0]), let s = Int(f[1]) else { return nil }
            self.init(rank: r, step: s)
        }
    }

    public var nanGradient: RankStep?
    public var perturbParameters: RankStep?
    public var crashAfterTemp: String?
    public var ranksPerNode: Int?

    public init(nanGradient: RankStep? = nil, perturbParameters: RankStep? = nil, crashAfterTemp: String? = nil,
                ranksPerNode: Int? = nil) {
        self.nanGradient = nanGradient
        self.perturbParameters = perturbParameters
        self.crashAfterTemp = crashAfterTemp
        self.ranksPerNode = ranksPerNode
    }

    public init(environment env: [String: String]) {
        self.init(nanGradient: RankStep(env["AETRAIN_TEST_NAN_GRAD"]), perturbParameters: RankStep(env["AETRAIN_TEST_PERTURB"]),
                  crashAfterTemp: env["AETRAIN_TEST_CRASH_AFTER_TEMP"],
                  ranksPerNode: env["AETRAIN_TEST_RANKS_PER_NODE"].flatMap { Int($0) }.flatMap { $0 >= 1 ? $0 : nil })
    }

    /// The hooks of this process, read once.
    public static let current = FaultInjection(environment: ProcessInfo.processInfo.environment)
}
