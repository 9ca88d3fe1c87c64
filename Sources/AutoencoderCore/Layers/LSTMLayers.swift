import CKernels
import Foundation

/// One LSTM layer unrolled over a fixed number of steps, with the semantics of
/// `torch.nn.LSTM(input, hidden, batch_first=True)` (one layer, h0 = c0 = 0):
///
///     z_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh     (z_t = [z_i, z_f, z_g, z_o], 4H)
///     i, f, o = σ(z_i), σ(z_f), σ(z_o);  g = tanh(z_g)
///     c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
///
/// Parameters, in the flat buffer in this order: W_ih [4H, I], W_hh [4H, H], b_ih [4H], b_hh [4H].
///
/// Shared by `LSTMEncoder` and `LSTMDecoder`, which fill the input projections, run `recur`, and
/// backwards run `backRecur`.
///
/// Workspace layout: time-major, [T, n, ·] for the current batch n, so that step t of every
/// sample is one dense [n, ·] block: the per-step recurrent products (h_{t-1} W_hhᵀ forward,
/// dz_t W_hh backward) are oneDNN brgemm matmuls on contiguous matrices, and the whole sequence is
/// one [T*n, ·] matrix for the products over all steps (dW_hh = DZᵀ·HPREV, where `hprev` holds
/// h_{t-1} at step t and zeros at t = 0). The gate arithmetic of a step is one vectorised C pass
/// over all n samples (kernels.c). With bf16 precision the matmuls read bf16 copies of the
/// weights, of h and of dz; gates, cell states and dL/dh stay f32.
final class LSTMRecurrence {
    let steps: Int
    let inputSize: Int
    let hidden: Int
    var precision: Precision = .f32
    /// The recurrent product adds onto the gates already holding the input projection (encoder),
    /// or writes them while the gate pass adds the projection (decoder: it is the same every step).
    let recurrentAccumulates: Bool

    var wih: UnsafeMutablePointer<Float>!
    var whh: UnsafeMutablePointer<Float>!
    var bih: UnsafeMutablePointer<Float>!
    var bhh: UnsafeMutablePointer<Float>!
    var dwih: UnsafeMutablePointer<Float>!
    var dwhh: UnsafeMutablePointer<Float>!
    var dbih: UnsafeMutablePointer<Float>!
    var dbhh: UnsafeMutablePointer<Float>!

    private(set) var reservedBatch = -1
    /// The batch of the last forward, whose stored activations backward uses.
    private(set) var forwardBatch = -1
    /// [T, n, 4H] f32: pre-activations on entry to `recur`, activated gates i, f, g, o after.
    private(set) var gates: UnsafeMutablePointer<Float>!
    /// [T, n, H] f32 each: c_t, tanh(c_t).
    private(set) var cells: UnsafeMutablePointer<Float>!
    private(set) var tanhCells: UnsafeMutablePointer<Float>!
    /// [T, n, H] in the compute type: h_{t-1} at step t (zero at t = 0).
    private(set) var hprev: UnsafeMutableRawPointer!
    /// [T, n, 4H] in the compute type: dL/dz_t, written by `backRecur`.
    private(set) var dgates: UnsafeMutableRawPointer!
    /// [4H]: b_ih + b_hh.
    private(set) var biasSum: UnsafeMutablePointer<Float>!
    /// [maxBatch, H] f32: dL/dh_{t-1} through the recurrence (dz_t W_hh), and dL/dc carried back.
    private var drec: UnsafeMutablePointer<Float>!
    private var dcell: UnsafeMutablePointer<Float>!
    /// [4H]: Σ dz over samples and steps (db_ih = db_hh).
    private var dbias: UnsafeMutablePointer<Float>!
    /// bf16: W_ih and W_hh rounded, refreshed by `prepareWeights` at each forward.
    private var wihLow: BF16Buffer?
    private var whhLow: BF16Buffer?
    private var buffers: [FloatBuffer] = []

    private final class Ops {
        let rec: MatMul
        let recBack: MatMul
        let whhGrad: MatMul
        init(rec: MatMul, recBack: MatMul, whhGrad: MatMul) {
            self.rec = rec
            self.recBack = recBack
            self.whhGrad = whhGrad
        }
    }
    private var cache = PrimitiveCache<Ops>()

    init(steps: Int, input: Int, hidden: Int, recurrentAccumulates: Bool) {
        precondition(steps > 0 && input > 0 && hidden > 0, "LSTM: steps, input and hidden must be positive")
        self.steps = steps
        inputSize = input
        self.hidden = hidden
        self.recurrentAccumulates = recurrentAccumulates
    }

    var parameterShapes: [(name: String, shape: [Int])] {
        [("weight_ih_l0", [4 * hidden, inputSize]), ("weight_hh_l0", [4 * hidden, hidden]),
         ("bias_ih_l0", [4 * hidden]), ("bias_hh_l0", [4 * hidden])]
    }
    var parameterCount: Int { 4 * hidden * (inputSize + hidden + 2) }
    var torchModule: String { "nn.LSTM(\(inputSize), \(hidden), batch_first=True)" }
    /// Bytes per element of the compute type.
    var elementSize: Int { precision == .bf16 ? 2 : 4 }

    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        let g4 = 4 * hidden
        let nih = g4 * inputSize, nhh = g4 * hidden
        wih = parameters
        whh = parameters + nih
        bih = parameters + nih + nhh
        bhh = parameters + nih + nhh + g4
        dwih = gradients
        dwhh = gradients + nih
        dbih = gradients + nih + nhh
        dbhh = gradients + nih + nhh + g4
    }

    func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {
        let g4 = 4 * hidden
        let nih = g4 * inputSize, nhh = g4 * hidden
        switch scheme {
        case .torch:
            // nn.LSTM.reset_parameters: every tensor U(±1/sqrt(hidden)).
            let bound = 1 / Float(hidden).squareRoot()
            for i in 0..<parameterCount { wih[i] = rng.uniform(-bound, bound) }
        case .glorot:
            // Keras-like: glorot_uniform on each weight (fan_out = 4H), zero biases except the
            // forget gate's, which starts at 1 (Keras unit_forget_bias=True) so that memory
            // survives the 28 steps early in training.
            let li = (6 / Float(inputSize + g4)).squareRoot()
            let lh = (6 / Float(hidden + g4)).squareRoot()
            for i in 0..<nih { wih[i] = rng.uniform(-li, li) }
            for i in 0..<nhh { whh[i] = rng.uniform(-lh, lh) }
            for i in 0..<g4 { bih[i] = (hidden..<(2 * hidden)).contains(i) ? 1 : 0; bhh[i] = 0 }
        }
    }

    func reserve(maxBatch: Int) {
        let rows = maxBatch * steps, h = hidden
        func make(_ n: Int) -> UnsafeMutablePointer<Float> {
            let b = FloatBuffer(n)
            buffers.append(b)
            return b.pointer
        }
        buffers = []
        cache.removeAll()
        gates = make(rows * 4 * h)
        cells = make(rows * h)
        tanhCells = make(rows * h)
        hprev = UnsafeMutableRawPointer(make(rows * h))  // room for f32; bf16 uses half
        dgates = UnsafeMutableRawPointer(make(rows * 4 * h))
        biasSum = make(4 * h)
        drec = make(maxBatch * h)
        dcell = make(maxBatch * h)
        dbias = make(4 * h)
        if precision == .bf16 {
            wihLow = BF16Buffer(4 * h * inputSize)
            whhLow = BF16Buffer(4 * h * h)
        } else {
            wihLow = nil
            whhLow = nil
        }
        reservedBatch = maxBatch
        forwardBatch = -1
    }

    /// b_ih + b_hh, and W_ih and W_hh as the products read them (bf16: rounded copies, refreshed now).
    func prepareWeights() {
        for j in 0..<(4 * hidden) { biasSum[j] = bih[j] + bhh[j] }
        if let wl = wihLow, let hl = whhLow {
            aet_f32_to_bf16(wih, wl.pointer, wl.count)
            aet_f32_to_bf16(whh, hl.pointer, hl.count)
        }
    }
    var wihOperand: UnsafeRawPointer { wihLow.map { UnsafeRawPointer($0.pointer) } ?? UnsafeRawPointer(wih!) }
    var whhOperand: UnsafeRawPointer { whhLow.map { UnsafeRawPointer($0.pointer) } ?? UnsafeRawPointer(whh!) }

    private func ops(_ n: Int) -> Ops {
        let T = steps, H = hidden, G = 4 * H, t = precision
        return cache.get(n) {
            Ops(rec: MatMul(m: n, n: G, k: H, a: .rows(H, t), b: .transposed(H, t), c: .rows(G, .f32),
                            accumulate: recurrentAccumulates, what: "\(torchModule) recurrent product"),
                recBack: MatMul(m: n, n: H, k: G, a: .rows(G, t), b: .rows(H, t), c: .rows(H, .f32),
                                what: "\(torchModule) recurrent gradient"),
                whhGrad: MatMul(m: G, n: H, k: n * T, a: .transposed(G, t), b: .rows(H, t), c: .rows(H, .f32), accumulate: true,
                                what: "\(torchModule) W_hh gradient"))
        }
    }

    /// Runs the recurrence over `gates` (time-major, holding the input projections; or nothing
    /// when `add` gives each sample's projection, the same at every step, rows of stride 4H).
    /// h_t goes to `hidden` (sample-major [n, T, H] in the compute type) when given, and h_{T-1} to
    /// `last` ([n, H] f32) when given.
    func recur(batch n: Int, add: UnsafePointer<Float>?, hidden hid: UnsafeMutableRawPointer?, last: UnsafeMutablePointer<Float>?) {
        precondition(n <= reservedBatch, "LSTM.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        forwardBatch = n
        let T = steps, H = hidden, G = 4 * H, e = elementSize, type = precision.code
        let ops = self.ops(n)
        let whhX = whhOperand
        hprev.initializeMemory(as: UInt8.self, repeating: 0, count: n * H * e)  // h_{-1} = 0 (zero bits in f32 and bf16)
        for t in 0..<T {
            let z = gates + t * n * G
            if t > 0 {
                // z_t[n, 4H] (+)= h_{t-1}[n, H] · W_hhᵀ
                ops.rec.run(hprev + t * n * H * e, whhX, z)
            }
            // h_t to hprev[t+1] (dense) and to hidden[:, t] (strided) or, at the end, to last.
            var d1: UnsafeMutableRawPointer? = nil, d1s = H, d1t = type
            var d2: UnsafeMutableRawPointer? = nil, d2s = 0, d2t = type
            if t + 1 < T { d1 = hprev + (t + 1) * n * H * e }
            if let hid {
                d2 = hid + t * H * e; d2s = T * H
            } else if t == T - 1, let last {
                d2 = UnsafeMutableRawPointer(last); d2s = H; d2t = Int32(AET_F32)
            }
            if d1 == nil { d1 = d2; d1s = d2s; d1t = d2t; d2 = nil }
            guard let h1 = d1 else { preconditionFailure("LSTM: step \(t) has nowhere to write h") }
            aet_lstm_fwd_step(z, G, add, G, add == nil || t > 0 ? 1 : 0, t > 0 ? cells + (t - 1) * n * H : nil,
                              cells + t * n * H, tanhCells + t * n * H, H, h1, d1s, d1t, d2, d2s, d2t, n, H)
        }
    }

    /// Backpropagates through time. dL/dh_t from outside the recurrence comes from `last` ([n, H],
    /// the final step only: the encoder) or `everyStep` (sample-major [n, T, H]: the decoder).
    /// Writes dL/dz_t into `dgates` and adds dL/dW_hh, dL/db_ih and dL/db_hh into the gradients.
    /// The caller adds dL/dW_ih and computes dL/dx from `dgates`.
    func backRecur(batch n: Int, last: UnsafePointer<Float>?, everyStep: UnsafePointer<Float>?) {
        precondition(n == forwardBatch, "LSTM.backward: batch \(n) differs from the last forward's \(forwardBatch)")
        let T = steps, H = hidden, G = 4 * H, e = elementSize, type = precision.code
        let ops = self.ops(n)
        let whhX = whhOperand
        dcell.update(repeating: 0, count: n * H)
        dbias.update(repeating: 0, count: G)
        for t in stride(from: T - 1, through: 0, by: -1) {
            var outside: UnsafePointer<Float>? = nil, os = H
            if let everyStep { outside = everyStep + t * H; os = T * H } else if t == T - 1 { outside = last }
            let dz = dgates + t * n * G * e
            aet_lstm_bwd_step(gates + t * n * G, G, t > 0 ? cells + (t - 1) * n * H : nil, tanhCells + t * n * H, H,
                              outside, os, t < T - 1 ? UnsafePointer(drec) : nil, H, dcell, dz, G, type, dbias, n, H)
            if t > 0 {
                // dh_{t-1}[n, H] = dz_t[n, 4H] · W_hh[4H, H] (the recurrent part)
                ops.recBack.run(dz, whhX, drec)
            }
        }
        // dW_hh[4H, H] += Σ_t dz_tᵀ · h_{t-1} = DZᵀ · HPREV over all T·n rows (h_{-1} = 0).
        ops.whhGrad.run(dgates, hprev, dwhh)
        for j in 0..<G {
            dbih[j] += dbias[j]
            dbhh[j] += dbias[j]
        }
    }
}

/// LSTM sequence encoder: `torch.nn.LSTM(features, hidden, batch_first=True)` over `steps` steps,
/// keeping only the last hidden state. Input per sample: steps×features floats, step t being
/// row t (an image read row by row). Output per sample: h_T, `hidden` floats.
///
/// Parameters: weight_ih_l0 [4H, F], weight_hh_l0 [4H, H], bias_ih_l0 [4H], bias_hh_l0 [4H],
/// gates in PyTorch order i, f, g, o. Init `.torch`: all U(±1/sqrt(H)); `.glorot`: weights
/// glorot-uniform (fan_out 4H), biases 0.
///
/// Forward: X is copied time-major (and rounded, in bf16), Z[T*n, 4H] = X · W_ihᵀ + b (one matmul
/// over all steps), then per step Z_t += h_{t-1} W_hhᵀ and the gate pass. Backward: BPTT with one
/// matmul per step for the recurrent term, then dW_ih += dZᵀ X and dX = dZ · W_ih as one matmul
/// each (dX copied back sample-major).
public final class LSTMEncoder: Layer {
    public let steps: Int
    public let features: Int
    public let hidden: Int
    public let inputSize: Int
    public let outputSize: Int
    let core: LSTMRecurrence
    public var precision: Precision {
        get { core.precision }
        set { core.precision = newValue }
    }
    /// [T, n, F] in the compute type: the input, time-major (kept for dW_ih).
    private var xSteps: FloatBuffer?
    /// [T, n, F] f32: dL/dx time-major.
    private var dxSteps: FloatBuffer?

    private final class Ops {
        let input: MatMul
        let wihGrad: MatMul
        var inputGrad: MatMul?
        init(input: MatMul, wihGrad: MatMul) {
            self.input = input
            self.wihGrad = wihGrad
        }
    }
    private var cache = PrimitiveCache<Ops>()

    public init(steps: Int, features: Int, hidden: Int) {
        self.steps = steps
        self.features = features
        self.hidden = hidden
        inputSize = steps * features
        outputSize = hidden
        core = LSTMRecurrence(steps: steps, input: features, hidden: hidden, recurrentAccumulates: true)
    }

    public var parameterShapes: [(name: String, shape: [Int])] { core.parameterShapes }
    /// GEMM multiply-adds done per sample: input projection for every step, recurrent product
    /// for steps 1..<T (h_0 = 0).
    public var macsPerSample: Int { 4 * hidden * (steps * features + (steps - 1) * hidden) }
    public var torchModuleCount: Int { 1 }
    public var torchModules: [String] { [core.torchModule] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        core.bind(parameters: parameters, gradients: gradients)
    }

    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {
        core.initialize(scheme, rng: &rng)
    }

    public func reserve(maxBatch: Int) {
        core.reserve(maxBatch: maxBatch)
        cache.removeAll()
        xSteps = FloatBuffer(maxBatch * inputSize)
        dxSteps = FloatBuffer(maxBatch * inputSize)
    }

    private func ops(_ n: Int) -> Ops {
        let T = steps, F = features, G = 4 * hidden, t = precision, core = core
        return cache.get(n) {
            let name = core.torchModule
            return Ops(input: MatMul(m: n * T, n: G, k: F, a: .rows(F, t), b: .transposed(F, t), c: .rows(G, .f32), bias: true,
                              what: "\(name) input projection"),
                wihGrad: MatMul(m: G, n: F, k: n * T, a: .transposed(G, t), b: .rows(F, t), c: .rows(F, .f32), accumulate: true,
                                what: "\(name) W_ih gradient"))
        }
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= core.reservedBatch, "LSTMEncoder.forward: batch \(n) exceeds reserve(maxBatch: \(core.reservedBatch))")
        let ops = self.ops(n)
        core.prepareWeights()
        // X time-major [T, n, F]; Z[T*n, 4H] = X · W_ihᵀ + (b_ih + b_hh)
        let xs = UnsafeMutableRawPointer(xSteps!.pointer)
        aet_steps_to_time_major(x, n, steps, features, xs, precision.code)
        ops.input.run(xs, core.wihOperand, core.gates, bias: core.biasSum)
        core.recur(batch: n, add: nil, hidden: nil, last: y)
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        let T = steps, F = features, G = 4 * hidden, t = precision
        let ops = self.ops(n)
        // dL/dh_t from outside: dy at the last step, nothing before.
        core.backRecur(batch: n, last: dy, everyStep: nil)
        // dW_ih[4H, F] += dZ[T*n, 4H]ᵀ · X[T*n, F]
        ops.wihGrad.run(core.dgates, xSteps!.pointer, core.dwih)
        // dX[T*n, F] = dZ · W_ih, then sample-major
        if let dx {
            if ops.inputGrad == nil {
                ops.inputGrad = MatMul(m: n * T, n: F, k: G, a: .rows(G, t), b: .rows(F, t), c: .rows(F, .f32),
                                       what: "\(core.torchModule) input gradient")
            }
            ops.inputGrad!.run(core.dgates, core.wihOperand, dxSteps!.pointer)
            aet_steps_to_sample_major(dxSteps!.pointer, n, T, F, dx)
        }
    }
}

/// LSTM sequence decoder: the code (C floats per sample) is the input at every one of `steps`
/// steps (PyTorch `z.unsqueeze(1).repeat(1, T, 1)`), `torch.nn.LSTM(C, hidden, batch_first=True)`
/// runs over them, and `torch.nn.Linear(hidden, features)` maps each step's h_t to `features`
/// logits (no activation). Output per sample: steps×features floats, step t being row t.
///
/// Parameters: weight_ih_l0 [4H, C], weight_hh_l0 [4H, H], bias_ih_l0 [4H], bias_hh_l0 [4H],
/// proj.weight [F, H], proj.bias [F]. Init `.torch`: LSTM tensors U(±1/sqrt(H)), Linear
/// U(±1/sqrt(H)) (its fan_in is H too); `.glorot`: weights glorot-uniform, biases 0.
///
/// The input is the same at every step, so its projection z W_ihᵀ + b is computed once per sample
/// (the gate pass adds it at every step), and in backward dW_ih and dz use Σ_t dZ_t (identical to
/// summing over the repeated copies).
public final class LSTMDecoder: Layer {
    public let code: Int
    public let steps: Int
    public let features: Int
    public let hidden: Int
    public let inputSize: Int
    public let outputSize: Int
    let core: LSTMRecurrence
    var wp: UnsafeMutablePointer<Float>!
    var bp: UnsafeMutablePointer<Float>!
    var dwp: UnsafeMutablePointer<Float>!
    var dbp: UnsafeMutablePointer<Float>!
    public var precision: Precision {
        get { core.precision }
        set { core.precision = newValue }
    }
    /// [maxBatch, 4H] f32: code W_ihᵀ + b, the input term of every step.
    private var projBuffer: FloatBuffer?
    /// [maxBatch, 4H] in the compute type: Σ_t dZ_t.
    private var sumBuffer: FloatBuffer?
    /// [maxBatch, T, H] in the compute type: h_t for the output projection.
    private var hiddenBuffer: FloatBuffer?
    /// [maxBatch, T, H] f32: dL/dh_t from the output projection.
    private var dHiddenBuffer: FloatBuffer?
    /// bf16: W_proj, the code and dY rounded.
    private var wpLow: BF16Buffer?
    private var codeLow: BF16Buffer?
    private var dyLow: BF16Buffer?

    private final class Ops {
        let input: MatMul
        let output: MatMul
        let wpGrad: MatMul
        let hiddenGrad: MatMul
        let wihGrad: MatMul
        var codeGrad: MatMul?
        init(input: MatMul, output: MatMul, wpGrad: MatMul, hiddenGrad: MatMul, wihGrad: MatMul) {
            self.input = input
            self.output = output
            self.wpGrad = wpGrad
            self.hiddenGrad = hiddenGrad
            self.wihGrad = wihGrad
        }
    }
    private var cache = PrimitiveCache<Ops>()

    public init(code: Int, steps: Int, features: Int, hidden: Int) {
        precondition(code > 0 && features > 0, "LSTMDecoder: code and features must be positive")
        self.code = code
        self.steps = steps
        self.features = features
        self.hidden = hidden
        inputSize = code
        outputSize = steps * features
        core = LSTMRecurrence(steps: steps, input: code, hidden: hidden, recurrentAccumulates: false)
    }

    public var parameterShapes: [(name: String, shape: [Int])] {
        core.parameterShapes + [("proj.weight", [features, hidden]), ("proj.bias", [features])]
    }
    /// GEMM multiply-adds done per sample: the code's projection once, the recurrent product for
    /// steps 1..<T, and the output Linear at every step.
    public var macsPerSample: Int {
        4 * hidden * (code + (steps - 1) * hidden) + steps * hidden * features
    }
    public var torchModuleCount: Int { 2 }
    public var torchModules: [String] { [core.torchModule, "nn.Linear(\(hidden), \(features))"] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        core.bind(parameters: parameters, gradients: gradients)
        let off = core.parameterCount
        wp = parameters + off
        bp = parameters + off + features * hidden
        dwp = gradients + off
        dbp = gradients + off + features * hidden
    }

    public func initialize(_ scheme: InitScheme, rng: inout SplitMix64) {
        core.initialize(scheme, rng: &rng)
        let nw = features * hidden
        switch scheme {
        case .torch:
            let bound = 1 / Float(hidden).squareRoot()
            for i in 0..<nw { wp[i] = rng.uniform(-bound, bound) }
            for i in 0..<features { bp[i] = rng.uniform(-bound, bound) }
        case .glorot:
            let limit = (6 / Float(hidden + features)).squareRoot()
            for i in 0..<nw { wp[i] = rng.uniform(-limit, limit) }
            for i in 0..<features { bp[i] = 0 }
        }
    }

    public func reserve(maxBatch: Int) {
        core.reserve(maxBatch: maxBatch)
        cache.removeAll()
        let G = 4 * hidden
        projBuffer = FloatBuffer(maxBatch * G)
        sumBuffer = FloatBuffer(maxBatch * G)
        hiddenBuffer = FloatBuffer(maxBatch * steps * hidden)
        dHiddenBuffer = FloatBuffer(maxBatch * steps * hidden)
        if precision == .bf16 {
            wpLow = BF16Buffer(features * hidden)
            codeLow = BF16Buffer(maxBatch * code)
            dyLow = BF16Buffer(maxBatch * outputSize)
        } else {
            wpLow = nil; codeLow = nil; dyLow = nil
        }
    }

    private func ops(_ n: Int) -> Ops {
        let T = steps, C = code, F = features, H = hidden, G = 4 * H, t = precision, core = core
        return cache.get(n) {
            let name = core.torchModule
            return Ops(input: MatMul(m: n, n: G, k: C, a: .rows(C, t), b: .transposed(C, t), c: .rows(G, .f32), bias: true,
                              what: "\(name) input projection"),
                output: MatMul(m: n * T, n: F, k: H, a: .rows(H, t), b: .transposed(H, t), c: .rows(F, .f32), bias: true,
                               what: "nn.Linear(\(H), \(F)) forward"),
                wpGrad: MatMul(m: F, n: H, k: n * T, a: .transposed(F, t), b: .rows(H, t), c: .rows(H, .f32), accumulate: true,
                               what: "nn.Linear(\(H), \(F)) weight gradient"),
                hiddenGrad: MatMul(m: n * T, n: H, k: F, a: .rows(F, t), b: .rows(H, t), c: .rows(H, .f32),
                                   what: "nn.Linear(\(H), \(F)) input gradient"),
                wihGrad: MatMul(m: G, n: C, k: n, a: .transposed(G, t), b: .rows(C, t), c: .rows(C, .f32), accumulate: true,
                                what: "\(name) W_ih gradient"))
        }
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= core.reservedBatch, "LSTMDecoder.forward: batch \(n) exceeds reserve(maxBatch: \(core.reservedBatch))")
        let ops = self.ops(n)
        core.prepareWeights()
        var xs = UnsafeRawPointer(x), wps = UnsafeRawPointer(wp!)
        if let cl = codeLow, let wl = wpLow {
            aet_f32_to_bf16(x, cl.pointer, n * code)
            aet_f32_to_bf16(wp, wl.pointer, wl.count)
            xs = UnsafeRawPointer(cl.pointer)
            wps = UnsafeRawPointer(wl.pointer)
        }
        // P[n, 4H] = code[n, C] · W_ihᵀ + b_ih + b_hh, the input term of every step.
        let proj = projBuffer!.pointer
        ops.input.run(xs, core.wihOperand, proj, bias: core.biasSum)
        let hid = UnsafeMutableRawPointer(hiddenBuffer!.pointer)
        core.recur(batch: n, add: proj, hidden: hid, last: nil)
        // Y[n*T, F] = H[n*T, H] · W_projᵀ + b_proj
        ops.output.run(hid, wps, y, bias: bp)
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        let T = steps, C = code, G = 4 * hidden, t = precision
        let ops = self.ops(n)
        let hid = UnsafeRawPointer(hiddenBuffer!.pointer)
        // Linear: db_proj += column sums of dY (and dY rounded to bf16, in the same pass);
        // dW_proj[F, H] += dYᵀ · H; dH = dY · W_proj.
        aet_dense_backward_prep(dy, dy, dyLow?.pointer, dbp, n * T, features, -1, 0, 1)
        let dys = dyLow.map { UnsafeRawPointer($0.pointer) } ?? UnsafeRawPointer(dy)
        let wps = wpLow.map { UnsafeRawPointer($0.pointer) } ?? UnsafeRawPointer(wp!)
        let dh = dHiddenBuffer!.pointer
        ops.wpGrad.run(dys, hid, dwp)
        ops.hiddenGrad.run(dys, wps, dh)
        core.backRecur(batch: n, last: nil, everyStep: dh)
        // S[n, 4H] = Σ_t dZ_t: the gradient reaching the (repeated) code's projection.
        let sum = UnsafeMutableRawPointer(sumBuffer!.pointer)
        aet_lstm_sum_steps(core.dgates, t.code, n, T, G, G, n * G, sum, t.code)
        // dW_ih[4H, C] += Sᵀ · code[n, C]; dcode[n, C] = S · W_ih
        let xs = codeLow.map { UnsafeRawPointer($0.pointer) } ?? UnsafeRawPointer(x)
        ops.wihGrad.run(sum, xs, core.dwih)
        if let dx {
            if ops.codeGrad == nil {
                ops.codeGrad = MatMul(m: n, n: C, k: G, a: .rows(G, t), b: .rows(C, t), c: .rows(C, .f32),
                                      what: "\(core.torchModule) code gradient")
            }
            ops.codeGrad!.run(sum, core.wihOperand, dx)
        }
    }
}
