import CKernels
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
        let k: Int32
        switch kind {
        case .gaussian: k = 0
        case .speckle: k = 1
        case .saltPepper: k = 2
        case .mask: k = 3
        }
        for s in 0..<count {
            var g = Streams.rng(seed: seed, stream: Streams.noise, UInt64(bitPattern: Int64(key)), UInt64(firstIndex + s))
            aet_noise(k, amount, clean + s * dim, noisy + s * dim, dim, g.next())
        }
    }
}
