import Foundation

/// Input corruption for denoising autoencoders: `gaussian:STD` (clipped to [0, 1]),
/// `speckle:STD` (x + x·n, clipped), `salt-pepper:P` and `mask:P`.
public struct NoiseSpec: Codable, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Codable, CaseIterable, Sendable {
        case gaussian, speckle, saltPepper = "salt-pepper", mask
    }
    public var kind: Kind
    public var amount: Float

    public init(kind: Kind, amount: Float) {
        self.kind = kind
        self.amount = amount
    }

    /// Parses `KIND:AMOUNT`; the error names the flag.
    public init(parsing s: String) throws {
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let k = Kind(rawValue: parts[0]), let a = Float(parts[1]), a.isFinite, a >= 0 else {
            throw AETError.usage("--noise \(s): expected gaussian:STD, speckle:STD, salt-pepper:P or mask:P")
        }
        if (k == .saltPepper || k == .mask) && a > 1 {
            throw AETError.usage("--noise \(s): probability must be in [0, 1]")
        }
        kind = k
        amount = a
    }

    public var description: String { "\(kind.rawValue):\(amount)" }

    /// Corrupts `count` samples of `dim` pixels from `clean` into `noisy`. Each sample's noise is
    /// keyed by (seed, key, global sample index), so it does not depend on the world size.
    public func apply(clean: UnsafePointer<Float>, noisy: UnsafeMutablePointer<Float>, count: Int, dim: Int,
                      seed: UInt64, key: Int, firstIndex: Int) {
        for s in 0..<count {
            var g = Streams.rng(seed: seed, stream: Streams.noise, UInt64(key), UInt64(firstIndex + s))
            let x = clean + s * dim, y = noisy + s * dim
            switch kind {
            case .gaussian:
                for i in 0..<dim { y[i] = min(max(x[i] + amount * g.normal(), 0), 1) }
            case .speckle:
                for i in 0..<dim { y[i] = min(max(x[i] + x[i] * amount * g.normal(), 0), 1) }
            case .saltPepper:
                for i in 0..<dim {
                    let u = g.nextFloat()
                    y[i] = u < amount ? (u < amount / 2 ? 0 : 1) : x[i]
                }
            case .mask:
                for i in 0..<dim { y[i] = g.nextFloat() < amount ? 0 : x[i] }
            }
        }
    }
}
