import Foundation
import XCTest
import TestSupport
@testable import AutoencoderCore

/// The optimizer flags reach Adam: from one checkpoint (step 2 of a small custom MLP run, 784-32-8
/// mirrored, through the release binary), one more step with
/// each flag must give exactly the parameters and moments of PyTorch's update rule, computed here
/// in Double from that checkpoint and the step-3 gradient.
///
/// The gradient comes from the run itself: step 3's gradient depends only on the parameters of
/// step 2 and the data, not on the optimizer flags, and a step with `--beta1 0` stores it as its
/// first moment (m = m + (1 − β₁)(g − m) = g). Without mpirun (the plain Adam pass) and under
/// mpirun -np 2 (the node-shared exchange's sliced Adam pass).
final class OptimizerFlagsTests: XCTestCase {
    struct Hyper {
        var lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.0
        var decoupled = false
    }

    /// torch.optim.Adam / AdamW (single-tensor path) for one element at step t, in Double.
    static func torchStep(p: Double, m: Double, v: Double, g: Double, t: Int, _ h: Hyper) -> (p: Double, m: Double, v: Double) {
        var p = p, g = g
        if h.decoupled { p *= 1 - h.lr * h.weightDecay } else { g += h.weightDecay * p }
        let m1 = m + (1 - h.beta1) * (g - m)                       // exp_avg.lerp_(grad, 1 − β₁)
        let v1 = h.beta2 * v + (1 - h.beta2) * g * g               // exp_avg_sq.mul_(β₂).addcmul_(g, g, 1 − β₂)
        let bc1 = 1 - pow(h.beta1, Double(t)), bc2 = 1 - pow(h.beta2, Double(t))
        let denom = v1.squareRoot() / bc2.squareRoot() + h.eps
        return (p - h.lr / bc1 * m1 / denom, m1, v1)
    }

    struct State {
        let p: [Float], m: [Float], v: [Float]
    }

    /// The flat parameters and moments of a checkpoint, in one fixed tensor order.
    static func state(_ ckpt: String) throws -> State {
        let t = try AE.tensors(ckpt)
        let names = t.keys.filter { !$0.hasPrefix("optimizer.") }.sorted()
        XCTAssertFalse(names.isEmpty)
        func flat(_ prefix: String) throws -> [Float] {
            try names.flatMap { try XCTUnwrap(t[prefix + $0], "\(ckpt) lacks \(prefix + $0)") }
        }
        return State(p: try flat(""), m: try flat("optimizer.exp_avg."), v: try flat("optimizer.exp_avg_sq."))
    }

    func testAdamFlagsChangeOneStepAsPyTorchDoes() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        let common = ["--dataset", "mnist", "--data-dir", mnist, "--encoder", "32", "--latent", "8", "--train-limit", "1024", "--test-limit", "100",
                      "--batch-size", "128", "--seed", "3", "--epochs", "1", "--no-report"]
        let cases: [(String, [String], (inout Hyper) -> Void)] = [
            ("defaults", [], { _ in }),
            ("--weight-decay 0.1", ["--weight-decay", "0.1"], { $0.weightDecay = 0.1 }),
            ("--weight-decay 0.1 --adamw", ["--weight-decay", "0.1", "--adamw"], { $0.weightDecay = 0.1; $0.decoupled = true }),
            ("--beta1 0.5", ["--beta1", "0.5"], { $0.beta1 = 0.5 }),
            ("--beta2 0.9", ["--beta2", "0.9"], { $0.beta2 = 0.9 }),
            ("--eps 1e-3", ["--eps", "1e-3"], { $0.eps = 1e-3 }),
            ("--lr 0.01", ["--lr", "0.01"], { $0.lr = 0.01 }),
        ]
        for np in [0, 2] {
            let world = np == 0 ? "no mpirun" : "np \(np)"
            func train(_ args: [String], _ out: String) throws {
                let r = np == 0 ? AE.exec([release] + common + args + ["--out", out])
                    : try AE.mpirun(np, common + args + ["--out", out], binary: release)
                XCTAssertEqual(r.status, 0, "\(world) \(args): \(r.stderr)")
            }
            let base = AE.tempDir("flags")
            try train(["--max-steps", "2"], base + "/start")
            let start = try AE.checkpoint(base + "/start")
            XCTAssertEqual(try AE.metadata(start)["adam_step"], "2")
            let s0 = try Self.state(start)
            // The step-3 gradient, stored as the first moment of a β₁ = 0 step.
            try train(["--resume", start, "--max-steps", "3", "--beta1", "0"], base + "/grad")
            let g = try Self.state(AE.checkpoint(base + "/grad")).m
            XCTAssertEqual(g.count, s0.p.count)
            XCTAssertTrue(g.contains { $0 != 0 }, "no gradient")
            var defaultStep: [Float] = []
            for (name, flags, set) in cases {
                let out = base + "/" + name.replacingOccurrences(of: " ", with: "_")
                try train(["--resume", start, "--max-steps", "3"] + flags, out)
                let ck = try AE.checkpoint(out)
                XCTAssertEqual(try AE.metadata(ck)["adam_step"], "3", name)
                let s1 = try Self.state(ck)
                var h = Hyper()
                set(&h)
                let ref = (0..<s0.p.count).map { i in
                    Self.torchStep(p: Double(s0.p[i]), m: Double(s0.m[i]), v: Double(s0.v[i]), g: Double(g[i]), t: 3, h)
                }
                // Float32 arithmetic on a few operands, and the gradient read back from a Float
                // moment (within 2 ulp of max(|g|, |m₀|)): 1e-6 of the operands' size for the
                // moments, 1e-4 of the step plus 2 ulp of the parameter for the parameters. A
                // wrong bias correction, ε placement or weight decay moves them by far more.
                let gErr = (0..<g.count).map { 2 * Double(max(abs(g[$0]), abs(s0.m[$0])).ulp) }
                Compare.elementwise("\(world) \(name): exp_avg", s1.m.map(Double.init), ref.map(\.m), tolerance: { i, _, e in
                    1e-6 * (abs(Double(s0.m[i])) + abs(Double(g[i])) + h.weightDecay * abs(Double(s0.p[i]))) + (1 - h.beta1) * gErr[i] + 2 * Double(Float(e).ulp)
                })
                Compare.elementwise("\(world) \(name): exp_avg_sq", s1.v.map(Double.init), ref.map(\.v), tolerance: { i, _, e in
                    let gi = abs(Double(g[i])) + h.weightDecay * abs(Double(s0.p[i]))
                    return 1e-6 * (Double(s0.v[i]) + (1 - h.beta2) * gi * gi) + (1 - h.beta2) * 2 * gi * gErr[i] + 2 * Double(Float(e).ulp)
                })
                Compare.elementwise("\(world) \(name): parameters", s1.p.map(Double.init), ref.map(\.p), tolerance: { i, _, e in
                    1e-4 * abs(e - Double(s0.p[i])) + 2 * Double(Float(e).ulp)
                })
                // The flag made a difference: most parameters moved differently from the default step.
                if flags.isEmpty {
                    defaultStep = s1.p
                } else {
                    let differ = (0..<s1.p.count).filter { abs(s1.p[$0] - defaultStep[$0]) > 4 * s1.p[$0].ulp }.count
                    XCTAssertGreaterThan(differ, s1.p.count / 10, "\(world) \(name): only \(differ) of \(s1.p.count) parameters differ from the default step")
                }
            }
        }
    }
}
