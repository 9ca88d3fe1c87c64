import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// The scaling model's formulas on hand-computed cases (the model itself is validated against
/// measured runs in README "Scaling model").
final class ScalingModelTests: XCTestCase {
    static let model = ScalingModel(computePerSample: 10e-6, computePerStep: 100e-6, adamPerParameter: 1e-9, parameters: 1_000_000,
                                    alphaNetwork: 2e-6, betaNetwork: 1e-10, alphaNode: 0.5e-6, betaNode: 0.2e-9,
                                    barrier: 1e-6, betaMemory: 0.1e-9, coresPerNode: 4)

    func testCollectiveFormulas() {
        // Ring over 4 ranks, 4 MB: 2·3 messages of 1 MB: 6α + 1.5·n·β.
        XCTAssertEqual(ScalingModel.ringSeconds(ranks: 4, bytes: 4e6, alpha: 1e-6, beta: 1e-9), 6e-6 + 1.5 * 4e6 * 1e-9, accuracy: 1e-15)
        XCTAssertEqual(ScalingModel.ringSeconds(ranks: 1, bytes: 4e6, alpha: 1e-6, beta: 1e-9), 0)
        // All-reduce over 8 ranks: large messages Rabenseifner (2·3α + 1.75nβ), small ones recursive doubling (3(α + nβ)).
        XCTAssertEqual(ScalingModel.allreduceSeconds(ranks: 8, bytes: 4e6, alpha: 1e-6, beta: 1e-9), 6e-6 + 1.75 * 4e6 * 1e-9, accuracy: 1e-15)
        XCTAssertEqual(ScalingModel.allreduceSeconds(ranks: 8, bytes: 8, alpha: 1e-6, beta: 1e-9), 3 * (1e-6 + 8e-9), accuracy: 1e-15)
        XCTAssertEqual(ScalingModel.allreduceSeconds(ranks: 5, bytes: 8, alpha: 1e-6, beta: 0), 3e-6, accuracy: 1e-15)  // ⌈log₂5⌉ = 3
        XCTAssertEqual(ScalingModel.log2Ceil(1), 0)
        XCTAssertEqual([2, 3, 4, 5, 64, 65].map(ScalingModel.log2Ceil), [1, 2, 2, 3, 6, 7])
    }

    func testStepParts() throws {
        let m = Self.model, P = 1e6, n = 4 * (P + 8)
        // One node of 4 ranks (4 cores), batch 128: 32 samples each.
        let shared = try XCTUnwrap(m.step(nodes: 1, ranksPerNode: 4, globalBatch: 128, scheme: .shared))
        XCTAssertEqual(shared.compute, 100e-6 + 32 * 10e-6, accuracy: 1e-15)
        XCTAssertEqual(shared.adam, 1e-9 * P / 4, accuracy: 1e-15)
        XCTAssertEqual(shared.exchange, 2 * 1e-6 * 2 + (4 * P + 2 * 4 * P * 3 / 4) * 0.1e-9, accuracy: 1e-15)
        let flat = try XCTUnwrap(m.step(nodes: 1, ranksPerNode: 4, globalBatch: 128, scheme: .allreduce))
        XCTAssertEqual(flat.adam, 1e-9 * P, accuracy: 1e-15)
        XCTAssertEqual(flat.exchange, ScalingModel.allreduceSeconds(ranks: 4, bytes: n, alpha: 0.5e-6, beta: 0.2e-9), accuracy: 1e-15)
        // 8 nodes × 4: the flat all-reduce (Rabenseifner here) crosses the network with 2(1 − 1/8)n
        // bytes per rank, 4 ranks sharing a link, and its 2 steps inside the node at the node's
        // figures; the hierarchical one is the node part plus 4 rings of a quarter each over 8 nodes.
        let flat8 = try XCTUnwrap(m.step(nodes: 8, ranksPerNode: 4, globalBatch: 128, scheme: .allreduce))
        XCTAssertEqual(flat8.exchange, 2 * 3 * 2e-6 + 2 * 7 / 8 * n * 1e-10 * 4 + 2 * 2 * 0.5e-6 + 2 * (1.0 / 8) * (3.0 / 4) * n * 0.2e-9,
                       accuracy: 1e-12)
        XCTAssertLessThan(flat8.exchange, 3 * (2e-6 + n * 1e-10 * 4) + 2 * (0.5e-6 + n * 0.2e-9), "Rabenseifner beats doubling at 4 MB")
        let h8 = try XCTUnwrap(m.step(nodes: 8, ranksPerNode: 4, globalBatch: 128, scheme: .hierarchical))
        let node = 2 * 1e-6 * 2 + (4 * P + 2 * 4 * P * 3 / 4 + 4 * P / 4) * 0.1e-9
        XCTAssertEqual(h8.exchange, node + 2 * 7 * 2e-6 + 2 * 7 / 8 * 4 * (P / 4 + 8) * 1e-10 * 4, accuracy: 1e-12)
        XCTAssertEqual(h8.compute, 100e-6 + 4 * 10e-6, accuracy: 1e-15)
        // Shared across nodes does not exist; fewer samples than ranks cannot run.
        XCTAssertNil(m.step(nodes: 2, ranksPerNode: 4, globalBatch: 128, scheme: .shared))
        XCTAssertNil(m.step(nodes: 64, ranksPerNode: 4, globalBatch: 128, scheme: .hierarchical))
        // Oversubscribed: 8 ranks on 4 cores take twice the compute time.
        let over = try XCTUnwrap(m.step(nodes: 1, ranksPerNode: 8, globalBatch: 128, scheme: .shared))
        XCTAssertEqual(over.compute, 2 * (100e-6 + 16 * 10e-6), accuracy: 1e-15)
        XCTAssertEqual(m.samplesPerSecond(nodes: 1, ranksPerNode: 4, globalBatch: 128, scheme: .shared)!, 128 / shared.total, accuracy: 1e-9)
    }

    func testAutoSchemeAndFits() {
        XCTAssertNil(ScalingModel.autoScheme(nodes: 1, ranksPerNode: 1))
        XCTAssertEqual(ScalingModel.autoScheme(nodes: 1, ranksPerNode: 4), .shared)
        XCTAssertEqual(ScalingModel.autoScheme(nodes: 4, ranksPerNode: 1), .allreduce)
        XCTAssertEqual(ScalingModel.autoScheme(nodes: 4, ranksPerNode: 2), .hierarchical)
        let line = ScalingModel.leastSquares([1, 2, 3, 4], [3, 5, 7, 9])
        XCTAssertEqual(line.a, 1, accuracy: 1e-12)
        XCTAssertEqual(line.b, 2, accuracy: 1e-12)
        let rel = ScalingModel.leastSquares([8, 64, 512, 4096], [1e-6 + 8e-9, 1e-6 + 64e-9, 1e-6 + 512e-9, 1e-6 + 4096e-9], relative: true)
        XCTAssertEqual(rel.a, 1e-6, accuracy: 1e-15)
        XCTAssertEqual(rel.b, 1e-9, accuracy: 1e-18)
        let one = ScalingModel.fitCompute([(samples: 128, seconds: 1.28e-3)])
        XCTAssertEqual(one.perStep, 0)
        XCTAssertEqual(one.perSample, 1e-5, accuracy: 1e-15)
        let two = ScalingModel.fitCompute([(samples: 128, seconds: 1.38e-3), (samples: 64, seconds: 0.74e-3)])
        XCTAssertEqual(two.perStep, 0.1e-3, accuracy: 1e-12)
        XCTAssertEqual(two.perSample, 1e-5, accuracy: 1e-12)
    }
}
