import Foundation

/// `aetrain comm-sweep` (under mpirun): the communication costs of the machine at hand, for the
/// scaling model (`ScalingModel`). It times
///
/// - `MPI_Allreduce` over all ranks, and the ring all-reduce of the hierarchical exchange
///   (`MPICommunicator.ringAllreduceSum`), at message sizes from 8 B to 4 MB; each fitted as
///   T(n) = a + b·n (least squares on relative error), from which the ring gives the latency and
///   time per byte of one message, α = a / 2(p−1) and β = b·p / 2(p−1), and the all-reduce those
///   of Rabenseifner's algorithm, α = a / 2⌈log₂p⌉ and β = b·p / 2(p−1);
/// - a node barrier through a shared window (as the shared exchanges take two per step);
/// - memory copies of 16 MB on every rank at once (the exchanges' slice copies).
///
/// Every time is the slowest rank's, the best of `rounds` rounds that each go through every size
/// (so a busy spell of a shared machine does not hit one size only). On one machine the "network"
/// is shared memory: plug a cluster's α and β into `aetrain scale-model` to predict it.
public enum CommSweep {
    public struct Fit: Codable, Sendable {
        public var bytes: [Int]
        public var seconds: [Double]
        /// T(n) = a + b·n.
        public var a: Double
        public var b: Double
    }

    public struct Result: Codable, Sendable {
        public var worldSize: Int
        public var ranksPerNode: Int
        public var allreduce: Fit
        public var ring: Fit
        /// Per-message latency and time per byte (from the ring), and the flat all-reduce's.
        public var alpha: Double
        public var beta: Double
        public var alphaAllreduce: Double
        public var betaAllreduce: Double
        /// One node barrier (s); memory copy time per byte (s/B) with every rank copying.
        public var barrierSeconds: Double
        public var memorySecondsPerByte: Double

        enum CodingKeys: String, CodingKey {
            case worldSize = "world_size", ranksPerNode = "ranks_per_node", allreduce, ring, alpha, beta
            case alphaAllreduce = "alpha_allreduce", betaAllreduce = "beta_allreduce"
            case barrierSeconds = "barrier_seconds", memorySecondsPerByte = "memory_seconds_per_byte"
        }
    }

    public static let sizes = [8, 64, 512, 4096, 32_768, 262_144, 1_048_576, 4_194_304]

    /// Runs the sweep (collective; at least 2 ranks). Every rank returns the same result.
    public static func run(comm: Communicator, rounds: Int = 7) throws -> Result {
        guard let world = comm as? MPICommunicator, comm.size > 1 else {
            throw AETError.usage("comm-sweep: run it under mpirun with at least 2 ranks (e.g. mpirun -np 2 aetrain comm-sweep)")
        }
        let p = world.size
        let maxFloats = sizes.max()! / 4
        let buf = FloatBuffer(maxFloats), scratch = FloatBuffer(maxFloats / p + 2)
        /// The slowest rank's seconds per call of `body` (`reps` calls).
        func time(_ reps: Int, _ body: () -> Void) -> Double {
            world.barrier(what: "sweep")
            let t0 = now()
            for _ in 0..<reps { body() }
            var t = [(now() - t0) / Double(reps)]
            world.allreduceMax(&t, count: 1, what: "sweep")
            return t[0]
        }
        func reps(_ bytes: Int) -> Int { max(10, min(2000, 40_000_000 / max(bytes, 1))) }
        var ar = [Double](repeating: .infinity, count: sizes.count), rg = ar
        for round in 0...rounds {  // round 0 warms up (first touch of MPI's buffers) and is not kept
            if round == 0 {
                for n in sizes {
                    world.allreduceSum(buf.pointer, count: n / 4, what: "sweep")
                    world.ringAllreduceSum(buf.pointer, count: n / 4, scratch: scratch.pointer, what: "sweep")
                }
                continue
            }
            for (i, n) in sizes.enumerated() {
                let count = n / 4
                ar[i] = min(ar[i], time(reps(n)) { world.allreduceSum(buf.pointer, count: count, what: "sweep") })
                rg[i] = min(rg[i], time(reps(n)) { world.ringAllreduceSum(buf.pointer, count: count, scratch: scratch.pointer, what: "sweep") })
            }
        }
        let x = sizes.map(Double.init)
        let fa = ScalingModel.leastSquares(x, ar, relative: true), fr = ScalingModel.leastSquares(x, rg, relative: true)
        let lg = ScalingModel.log2Ceil(p)
        // A node barrier on the shared window of this rank's node, and memory copies.
        let node = world.splitByNode()
        let window = node.size > 1 ? try SharedWindow.allocate(floats: 16, comm: node) : nil
        let copyBytes = 16 << 20
        let src = FloatBuffer(copyBytes / 4), dst = FloatBuffer(copyBytes / 4)
        var barrier = Double.infinity, copy = Double.infinity
        for _ in 0..<rounds {
            if let w = window { barrier = min(barrier, time(2000) { w.sync(what: "sweep") }) }
            copy = min(copy, time(10) { dst.pointer.update(from: src.pointer, count: copyBytes / 4) })
        }
        if window == nil { barrier = 0 }
        return Result(worldSize: p, ranksPerNode: node.size,
                      allreduce: Fit(bytes: sizes, seconds: ar, a: fa.a, b: fa.b), ring: Fit(bytes: sizes, seconds: rg, a: fr.a, b: fr.b),
                      alpha: max(0, fr.a) / Double(2 * (p - 1)), beta: max(0, fr.b) * Double(p) / Double(2 * (p - 1)),
                      alphaAllreduce: max(0, fa.a) / (2 * lg), betaAllreduce: max(0, fa.b) * Double(p) / Double(2 * (p - 1)),
                      barrierSeconds: barrier, memorySecondsPerByte: copy / Double(2 * copyBytes))
    }
}
