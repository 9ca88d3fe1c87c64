import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// --lr-schedule, --warmup-steps and --scale-lr against PyTorch's schedulers, step by step. The
/// references below are written from PyTorch's documented update rules as `scheduler.step()`
/// applies them, one call at a time (recursive forms: the rate of step t is computed from the rate
/// of step t − 1), independently of the closed forms `LearningRate` uses:
///
/// - `LambdaLR(lr_lambda)`: lr = base · λ(t);
/// - `CosineAnnealingLR(T_max, eta_min = 0)`: η₀ = base, η_{t+1} = η_min + (η_t − η_min) ·
///   (1 + cos(π(t+1)/T_max)) / (1 + cos(π t/T_max));
/// - `StepLR(step_size, gamma)`: the rate is multiplied by γ whenever t > 0 and t % step_size == 0;
/// - `SequentialLR([warm-up, after], milestones=[W])`: the warm-up scheduler before W; at W the
///   second one starts from its first value (base) and steps from there.
final class LRScheduleTests: XCTestCase {
    /// PyTorch's per-call rule for the scheduler after the warm-up, from base.
    enum Reference {
        case constant, cosine(tMax: Int), step(every: Int, gamma: Double)

        /// The rates of its first `n` steps, each from the previous one.
        func rates(base: Double, count n: Int) -> [Double] {
            var out: [Double] = []
            var eta = base
            for t in 0..<n {
                if t > 0 {
                    switch self {
                    case .constant: break
                    case .cosine(let tMax):
                        eta = 0 + (eta - 0) * (1 + cos(Double.pi * Double(t) / Double(tMax))) / (1 + cos(Double.pi * Double(t - 1) / Double(tMax)))
                    case .step(let every, let gamma):
                        if t % every == 0 { eta *= gamma }
                    }
                }
                out.append(eta)
            }
            return out
        }
    }

    /// SequentialLR(LambdaLR((t + 1)/W), after, milestones=[W]) over `total` steps.
    static func pytorch(base: Double, warmup w: Int, after: Reference, total: Int) -> [Double] {
        let warm = (0..<min(w, total)).map { t in base * (Double(t + 1) / Double(w)) }
        return warm + after.rates(base: base, count: max(0, total - w))
    }

    /// Relative tolerance `rtol`, plus 1e-13 of the base rate: near the end of a cosine, 1 + cos(·)
    /// loses digits to cancellation in either form (the rates there are ~1e-7 of the base).
    func check(_ name: String, lr: Double, schedule: LRSchedule, batch: Int, total: Int, reference: [Double], rtol: Double) {
        let rate = LearningRate(lr: lr, schedule: schedule, globalBatch: batch, totalSteps: total)
        let mine = (0..<total).map { rate.at(step: $0) }
        Compare.close(name, mine, reference, rtol: rtol, atol: 1e-13 * rate.base)
    }

    func testCosineWithWarmupAsPyTorch() {
        for (w, total) in [(0, 100), (10, 100), (10, 11), (7, 4_690), (1, 2)] {
            let base = 3e-3
            check("cosine W=\(w) T=\(total)", lr: base, schedule: LRSchedule(kind: .cosine, warmupSteps: w), batch: 128, total: total,
                  reference: Self.pytorch(base: base, warmup: w, after: .cosine(tMax: total - w), total: total),
                  rtol: 1e-12)  // the recursive form accumulates rounding over thousands of steps
        }
        // The last step of the run is not at zero; the step after the warm-up is at the full rate.
        let r = LearningRate(lr: 1e-3, schedule: LRSchedule(kind: .cosine, warmupSteps: 10), globalBatch: 128, totalSteps: 110)
        XCTAssertEqual(r.at(step: 10), 1e-3)
        XCTAssertEqual(r.at(step: 60), 0.5e-3, accuracy: 1e-18)
        XCTAssertGreaterThan(r.at(step: 109), 0)
        XCTAssertLessThan(r.at(step: 109), 1e-6)
    }

    func testStepScheduleWithWarmupAsPyTorch() {
        for (every, gamma, w, total) in [(3, 0.5, 0, 20), (1000, 0.1, 5, 3000), (1, 0.9, 2, 30)] {
            check("step:\(every):\(gamma) W=\(w)", lr: 1e-3, schedule: LRSchedule(kind: .step(every: every, gamma: gamma), warmupSteps: w),
                  batch: 128, total: total, reference: Self.pytorch(base: 1e-3, warmup: w, after: .step(every: every, gamma: gamma), total: total),
                  rtol: 1e-13)
        }
    }

    func testLinearWarmupAndScalingRule() {
        // --scale-lr: lr × B / 128 (Goyal et al.); the warm-up climbs to that rate.
        check("constant W=8 B=1024 scaled", lr: 1e-3, schedule: LRSchedule(kind: .constant, warmupSteps: 8, scaleLR: true), batch: 1024,
              total: 20, reference: Self.pytorch(base: 8e-3, warmup: 8, after: .constant, total: 20), rtol: 1e-15)
        let r = LearningRate(lr: 1e-3, schedule: LRSchedule(kind: .constant, warmupSteps: 4), globalBatch: 512, totalSteps: 10)
        XCTAssertEqual((0..<5).map { r.at(step: $0) }, [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3])
        XCTAssertEqual(LearningRate(lr: 1e-3, schedule: LRSchedule(scaleLR: true), globalBatch: 96, totalSteps: 5).base, 0.75e-3)
    }

    /// No schedule: every step takes --lr itself, to the bit (runs without the flags are unchanged).
    func testNoScheduleIsTheLearningRateItself() {
        for lr in [1e-3, 0.1234567, 3e-7] {
            for s in [nil, LRSchedule()] {
                let r = LearningRate(lr: lr, schedule: s, globalBatch: 1000, totalSteps: 50)
                XCTAssertTrue((0..<50).allSatisfy { r.at(step: $0).bitPattern == lr.bitPattern })
            }
        }
    }

    func testParsingAndRanges() throws {
        XCTAssertEqual(try LRSchedule.kind(parsing: "constant"), .constant)
        XCTAssertEqual(try LRSchedule.kind(parsing: "cosine"), .cosine)
        XCTAssertEqual(try LRSchedule.kind(parsing: "step:1000:0.5"), .step(every: 1000, gamma: 0.5))
        for bad in ["", "linear", "step", "step:10", "step:0:0.5", "step:-1:0.5", "step:10:0", "step:10:nan", "step:10:inf",
                    "step:a:0.5", "step:10:0.5:1", "Cosine"] {
            XCTAssertThrowsError(try LRSchedule.kind(parsing: bad), bad) { e in
                XCTAssertTrue((e as? AETError)?.message.hasPrefix("--lr-schedule \(bad):") ?? false, "\(e)")
                XCTAssertEqual((e as? AETError)?.exitCode, ExitCode.usage)
            }
        }
        XCTAssertThrowsError(try LRSchedule(warmupSteps: -1).validate()) { e in
            XCTAssertEqual((e as? AETError)?.message, "--warmup-steps -1: must be in 0...\(TrainConfig.maxSteps)")
        }
        // A checkpoint's config holding an out-of-range schedule is refused like the flag.
        var c = TrainConfig(model: ModelSpec.preset("mlp3")!)
        c.lrSchedule = LRSchedule(kind: .step(every: 0, gamma: 0.5))
        XCTAssertThrowsError(try c.validateValues())
        // It travels in the config JSON (checkpoint metadata), and an older config without it decodes.
        c.lrSchedule = LRSchedule(kind: .step(every: 7, gamma: 0.25), warmupSteps: 3, scaleLR: true)
        let back = try TrainConfig.decoder.decode(TrainConfig.self, from: Data(c.json().utf8))
        XCTAssertEqual(back.lrSchedule, c.lrSchedule)
        var old = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(c.json().utf8)) as? [String: Any])
        old["lrSchedule"] = nil
        let older = try TrainConfig.decoder.decode(TrainConfig.self, from: JSONSerialization.data(withJSONObject: old))
        XCTAssertNil(older.lrSchedule)
    }
}
