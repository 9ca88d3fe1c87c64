import Foundation
import XCTest
@testable import AutoencoderCore

final class ShardingTests: XCTestCase {
    func testSliceCoversEachSampleExactlyOnce() {
        for size in 1...5 {
            for count in 0...20 {
                var seen = [Int](repeating: 0, count: count)
                var previousHi = 0
                var sizes: [Int] = []
                for rank in 0..<size {
                    let (lo, hi) = Trainer.slice(rank: rank, size: size, count: count)
                    XCTAssertLessThanOrEqual(lo, hi, "W=\(size) count=\(count) rank=\(rank)")
                    XCTAssertEqual(lo, previousHi, "W=\(size) count=\(count) rank=\(rank): gap or overlap")
                    XCTAssertGreaterThanOrEqual(lo, 0)
                    XCTAssertLessThanOrEqual(hi, count)
                    for i in lo..<max(lo, hi) { seen[i] += 1 }
                    previousHi = hi
                    sizes.append(hi - lo)
                }
                XCTAssertEqual(previousHi, count, "W=\(size) count=\(count): tail not covered")
                XCTAssertEqual(seen, [Int](repeating: 1, count: count), "W=\(size) count=\(count)")
                // Balanced: slice sizes differ by at most one (empty slices only when count < W).
                XCTAssertLessThanOrEqual((sizes.max() ?? 0) - (sizes.min() ?? 0), 1, "W=\(size) count=\(count): \(sizes)")
                if count >= size { XCTAssertFalse(sizes.contains(0), "W=\(size) count=\(count): \(sizes)") }
                // No slice is larger than the per-rank buffer the Trainer allocates, ⌈B/W⌉.
                XCTAssertLessThanOrEqual(sizes.max() ?? 0, (count + size - 1) / size)
            }
        }
    }

    func testSliceSingleRankIsEverything() {
        for count in [0, 1, 7, 60000] {
            let (lo, hi) = Trainer.slice(rank: 0, size: 1, count: count)
            XCTAssertEqual(lo, 0)
            XCTAssertEqual(hi, count)
        }
        // Large batches do not overflow the rank·count product.
        let (lo, hi) = Trainer.slice(rank: 3, size: 4, count: 1 << 40)
        XCTAssertEqual(lo, 3 << 38)
        XCTAssertEqual(hi, 1 << 40)
    }

    func testPermutationIsAPermutationAndReproducible() {
        for n in [0, 1, 2, 3, 10, 1000] {
            let p = Streams.permutation(n: n, seed: 7, epoch: 0)
            XCTAssertEqual(p.count, n)
            XCTAssertEqual(p.sorted(), (0..<n).map { Int32($0) }, "n=\(n)")
            XCTAssertEqual(Streams.permutation(n: n, seed: 7, epoch: 0), p, "n=\(n): not reproducible")
        }
        let a = Streams.permutation(n: 1000, seed: 7, epoch: 0)
        XCTAssertFalse(a == (0..<1000).map { Int32($0) }, "identity: not shuffled")
        XCTAssertFalse(Streams.permutation(n: 1000, seed: 7, epoch: 1) == a, "epoch ignored")
        XCTAssertFalse(Streams.permutation(n: 1000, seed: 8, epoch: 0) == a, "seed ignored")
        // Roughly uniform: for n = 3 over many epochs every one of the 6 orders appears, each ~1/6.
        var counts: [[Int32]: Int] = [:]
        for e in 0..<3000 { counts[Streams.permutation(n: 3, seed: 1, epoch: e), default: 0] += 1 }
        XCTAssertEqual(counts.count, 6)
        for (perm, c) in counts { XCTAssertEqual(Double(c), 500, accuracy: 5 * (3000.0 * (1.0 / 6) * (5.0 / 6)).squareRoot(), "\(perm)") }
        // A full-size (60,000) permutation is a permutation too.
        let big = Streams.permutation(n: 60000, seed: 123, epoch: 4)
        var hit = [Bool](repeating: false, count: 60000)
        for v in big { XCTAssertFalse(hit[Int(v)]); hit[Int(v)] = true }
        XCTAssertTrue(hit.allSatisfy { $0 })
    }

    func testStreamsAreCounterBased() {
        // The generator for (seed, stream, a, b) is a pure function of its key.
        var g1 = Streams.rng(seed: 5, stream: Streams.noise, 3, 9)
        var g2 = Streams.rng(seed: 5, stream: Streams.noise, 3, 9)
        let s1 = (0..<4).map { _ in g1.next() }, s2 = (0..<4).map { _ in g2.next() }
        XCTAssertEqual(s1, s2)
        var keys = Set<UInt64>()
        for stream in [Streams.shuffle, Streams.noise, Streams.vae] {
            for a in 0..<4 as Range<UInt64> {
                for b in 0..<4 as Range<UInt64> {
                    var g = Streams.rng(seed: 5, stream: stream, a, b)
                    keys.insert(g.next())
                }
            }
        }
        XCTAssertEqual(keys.count, 48, "distinct keys must give distinct streams")
    }
}
