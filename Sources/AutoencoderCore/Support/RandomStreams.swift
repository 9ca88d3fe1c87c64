import Foundation

/// SplitMix64: a small, fast, seedable generator with a 64-bit state that is trivial to store.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    @inline(__always) public mutating func nextFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [lo, hi).
    @inline(__always) public mutating func uniform(_ lo: Float, _ hi: Float) -> Float {
        lo + (hi - lo) * nextFloat()
    }

    /// Standard normal (Box–Muller, one value per call).
    @inline(__always) public mutating func normal() -> Float {
        let u1 = Double((next() >> 11) + 1) * (1.0 / 9_007_199_254_740_993.0)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

/// Counter-based streams: a generator for (seed, stream, a, b) that does not depend on how many
/// numbers were drawn before. Noise and VAE samples are keyed by (epoch-step, global sample index),
/// so every world size draws the same numbers for the same sample, and a resume needs no RNG state.
public enum Streams {
    public static let shuffle: UInt64 = 1
    public static let noise: UInt64 = 2
    public static let vae: UInt64 = 3
    public static let initialise: UInt64 = 4
    public static let generate: UInt64 = 5

    public static func rng(seed: UInt64, stream: UInt64, _ a: UInt64 = 0, _ b: UInt64 = 0) -> SplitMix64 {
        var m = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        var s = m.next()
        s ^= a &* 0x8CB9_2BA7_2F3D_8DD7
        m = SplitMix64(seed: s)
        s = m.next() ^ (b &* 0x9E37_79B9_7F4A_7C15)
        return SplitMix64(seed: s)
    }

    /// The permutation of 0..<n for an epoch; identical on every rank.
    public static func permutation(n: Int, seed: UInt64, epoch: Int) -> [Int32] {
        var perm = [Int32](unsafeUninitializedCapacity: n) { buf, c in
            for i in 0..<n { buf[i] = Int32(i) }
            c = n
        }
        var g = rng(seed: seed, stream: shuffle, UInt64(epoch))
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                let j = Int(g.next() % UInt64(i + 1))
                perm.swapAt(i, j)
            }
        }
        return perm
    }
}
