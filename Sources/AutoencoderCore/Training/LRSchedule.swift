import Foundation

/// --lr-schedule, --warmup-steps and --scale-lr: the learning rate as a function of the step, for
/// training with large global batches (Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training
/// ImageNet in 1 Hour"). Stored in the run's config (and so in every checkpoint); the rate at a
/// step depends only on the config, the step and the run's total steps, so a resume continues it
/// exactly.
public struct LRSchedule: Codable, Equatable, Sendable, CustomStringConvertible {
    /// What follows the warm-up.
    public enum Kind: Codable, Equatable, Sendable {
        /// The base rate throughout.
        case constant
        /// `torch.optim.lr_scheduler.CosineAnnealingLR(T_max = steps after the warm-up, eta_min = 0)`.
        case cosine
        /// `torch.optim.lr_scheduler.StepLR(step_size: every, gamma)`.
        case step(every: Int, gamma: Double)
    }

    public var kind: Kind = .constant
    /// Linear warm-up over the first N steps (0: none).
    public var warmupSteps: Int = 0
    /// The linear scaling rule: base rate = --lr × global batch / 128.
    public var scaleLR: Bool = false

    public init(kind: Kind = .constant, warmupSteps: Int = 0, scaleLR: Bool = false) {
        self.kind = kind
        self.warmupSteps = warmupSteps
        self.scaleLR = scaleLR
    }

    /// The batch the --scale-lr rule scales from (aetrain's default --batch-size, and the batch of
    /// the PyTorch and Keras tutorials the presets follow).
    public static let referenceBatch = 128

    /// Parses --lr-schedule: `constant`, `cosine` or `step:EVERY:GAMMA` (EVERY ≥ 1 steps, GAMMA a
    /// finite number > 0).
    public static func kind(parsing text: String) throws -> Kind {
        switch text {
        case "constant": return .constant
        case "cosine": return .cosine
        default:
            let f = text.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count == 3, f[0] == "step" else {
                throw AETError.usage("--lr-schedule \(text): expected constant, cosine or step:EVERY:GAMMA (e.g. step:1000:0.5)")
            }
            guard let every = Int(f[1]), every >= 1 else {
                throw AETError.usage("--lr-schedule \(text): EVERY must be a whole number of steps ≥ 1")
            }
            guard let gamma = Double(f[2]), gamma.isFinite, gamma > 0 else {
                throw AETError.usage("--lr-schedule \(text): GAMMA must be a finite number > 0")
            }
            return .step(every: every, gamma: gamma)
        }
    }

    public var kindDescription: String {
        switch kind {
        case .constant: return "constant"
        case .cosine: return "cosine"
        case .step(let every, let gamma): return "step:\(every):\(gamma)"
        }
    }

    public var description: String {
        kindDescription + (warmupSteps > 0 ? ", warm-up \(warmupSteps) steps" : "") + (scaleLR ? ", scaled by batch/128" : "")
    }

    /// Range checks (also for a checkpoint's config); errors name the flag.
    public func validate() throws {
        if !(0...TrainConfig.maxSteps).contains(warmupSteps) {
            throw AETError.usage("--warmup-steps \(warmupSteps): must be in 0...\(TrainConfig.maxSteps)")
        }
        if case .step(let every, let gamma) = kind {
            if !(1...TrainConfig.maxSteps).contains(every) { throw AETError.usage("--lr-schedule \(kindDescription): EVERY must be in 1...\(TrainConfig.maxSteps)") }
            if !(gamma.isFinite && gamma > 0) { throw AETError.usage("--lr-schedule \(kindDescription): GAMMA must be a finite number > 0") }
        }
    }
}

/// The learning rate of each optimiser step of one run: PyTorch's schedulers in closed form.
///
/// With `base` = --lr (× global batch / 128 with --scale-lr, the linear scaling rule), W warm-up
/// steps and T the run's total steps (epochs × steps per epoch, or --max-steps when smaller), the
/// rate of step t (0-based; the t-th `optimizer.step()`, taken after t `scheduler.step()` calls) is
/// the PyTorch composition
///
///     SequentialLR(optimizer, [LambdaLR(optimizer, lambda t: (t + 1) / W), AFTER], milestones=[W])
///
/// - warm-up, t < W: `LambdaLR`, lr = base · λ(t), λ(t) = (t + 1) / W: the first step takes base/W,
///   step W − 1 the full rate (linear warm-up as Goyal et al. 2017 §2.2, "gradual warmup");
/// - after it, with t' = t − W (SequentialLR restarts the next scheduler at the milestone):
///   - constant: base;
///   - cosine, `CosineAnnealingLR(T_max = T − W, eta_min = 0)`, whose documented closed form is
///     η = η_min + ½(η_max − η_min)(1 + cos(π · T_cur / T_max)) with T_cur = t'
///     (docs.pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.CosineAnnealingLR.html;
///     PyTorch steps it by the recursive form η_{t+1} = η_min + (η_t − η_min)(1 + cos(π(T_cur+1)/T_max))
///     / (1 + cos(π T_cur/T_max)), equal up to rounding: LRScheduleTests checks both);
///   - step:EVERY:GAMMA, `StepLR(step_size=EVERY, gamma=GAMMA)`: base · GAMMA^⌊t'/EVERY⌋.
///
/// Without a schedule (or `constant`, no warm-up, no scaling) every step takes --lr exactly.
public struct LearningRate: Sendable {
    public let schedule: LRSchedule
    /// --lr, scaled by the linear scaling rule when asked.
    public let base: Double
    /// The run's total steps (T).
    public let totalSteps: Int

    public init(lr: Double, schedule: LRSchedule?, globalBatch: Int, totalSteps: Int) {
        let s = schedule ?? LRSchedule()
        self.schedule = s
        base = s.scaleLR ? lr * Double(globalBatch) / Double(LRSchedule.referenceBatch) : lr
        self.totalSteps = totalSteps
    }

    /// The rate of optimiser step `t` (0-based).
    @inline(__always) public func at(step t: Int) -> Double {
        let w = schedule.warmupSteps
        if t < w { return base * (Double(t + 1) / Double(w)) }
        let t1 = t - w
        switch schedule.kind {
        case .constant:
            return base
        case .cosine:
            let tMax = totalSteps - w
            guard tMax > 0 else { return base }
            return 0 + (base - 0) * (1 + cos(Double.pi * Double(t1) / Double(tMax))) / 2
        case .step(let every, let gamma):
            return base * pow(gamma, Double(t1 / every))
        }
    }
}
