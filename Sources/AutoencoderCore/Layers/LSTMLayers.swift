import CBLAS
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
/// Shared by `LSTMEncoder` and `LSTMDecoder`, which fill the input projections (x_t W_ihᵀ + b) for
/// every step, run `recur`, and after filling dL/dh run `backRecur`.
///
/// Workspace layout: sample-major, [n, T, ·] for the current batch n (so a whole batch is one
/// contiguous [n*T, ·] matrix, and step t of every sample is a strided [n, ·] view with leading
/// dimension T*·). That turns the input-side products (x W_ihᵀ, dW_ih, dx, and the decoder's
/// projection) into one GEMM per pass over all steps; only the recurrent products are per step.
/// Stored per step and sample: the activated gates (4H), c_t, tanh(c_t) and h_t (H each), i.e.
/// maxBatch·T·7H floats, plus dL/dz (4H) and dL/dh (H) for backward.
final class LSTMRecurrence {
    let steps: Int
    let inputSize: Int
    let hidden: Int

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
    /// [n, T, 4H]: pre-activations on entry to `recur`, activated gates i, f, g, o after.
    private(set) var gates: UnsafeMutablePointer<Float>!
    /// [n, T, H] each: c_t, tanh(c_t), h_t.
    private(set) var cells: UnsafeMutablePointer<Float>!
    private(set) var tanhCells: UnsafeMutablePointer<Float>!
    private(set) var hiddens: UnsafeMutablePointer<Float>!
    /// [n, T, 4H]: dL/dz_t, written by `backRecur`.
    private(set) var dgates: UnsafeMutablePointer<Float>!
    /// [n, T, H]: dL/dh_t from outside the recurrence, filled by the caller before `backRecur`
    /// (which adds the recurrent part in place).
    private(set) var dhiddens: UnsafeMutablePointer<Float>!
    /// [4H]: b_ih + b_hh.
    private(set) var biasSum: UnsafeMutablePointer<Float>!
    /// [maxBatch, H]: dL/dc carried backwards through time.
    private var dcell: UnsafeMutablePointer<Float>!
    /// [H] zeros: c_{-1}.
    private var zeros: UnsafeMutablePointer<Float>!
    private var buffers: [FloatBuffer] = []

    init(steps: Int, input: Int, hidden: Int) {
        precondition(steps > 0 && input > 0 && hidden > 0, "LSTM: steps, input and hidden must be positive")
        self.steps = steps
        inputSize = input
        self.hidden = hidden
    }

    var parameterShapes: [(name: String, shape: [Int])] {
        [("weight_ih_l0", [4 * hidden, inputSize]), ("weight_hh_l0", [4 * hidden, hidden]),
         ("bias_ih_l0", [4 * hidden]), ("bias_hh_l0", [4 * hidden])]
    }
    var parameterCount: Int { 4 * hidden * (inputSize + hidden + 2) }
    var torchModule: String { "nn.LSTM(\(inputSize), \(hidden), batch_first=True)" }

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
        gates = make(rows * 4 * h)
        cells = make(rows * h)
        tanhCells = make(rows * h)
        hiddens = make(rows * h)
        dgates = make(rows * 4 * h)
        dhiddens = make(rows * h)
        biasSum = make(4 * h)
        dcell = make(maxBatch * h)
        zeros = make(h)
        reservedBatch = maxBatch
        forwardBatch = -1
    }

    /// biasSum = b_ih + b_hh.
    func sumBiases() {
        for j in 0..<(4 * hidden) { biasSum[j] = bih[j] + bhh[j] }
    }

    /// On entry `gates` holds x_t W_ihᵀ + b_ih + b_hh for every sample and step; runs the
    /// recurrence, leaving the activated gates, c, tanh(c) and h for every step.
    func recur(batch n: Int) {
        precondition(n <= reservedBatch, "LSTM.forward: batch \(n) exceeds reserve(maxBatch: \(reservedBatch))")
        forwardBatch = n
        let T = steps, H = hidden, G = 4 * H
        for t in 0..<T {
            if t > 0 {
                // z_t[n, 4H] += h_{t-1}[n, H] · W_hhᵀ (strided views of [n, T, ·])
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(G), Int32(H),
                            1, hiddens + (t - 1) * H, Int32(T * H), whh, Int32(H), 1, gates + t * G, Int32(T * G))
            }
            for s in 0..<n {
                let r = s * T + t
                let z = gates + r * G
                let i = z, f = z + H, g = z + 2 * H, o = z + 3 * H
                let cPrev = t > 0 ? UnsafePointer(cells + (r - 1) * H) : UnsafePointer(zeros!)
                let c = cells + r * H, tc = tanhCells + r * H, h = hiddens + r * H
                // tanh(v) = 2σ(2v) - 1, so one vectorised sigmoid call covers all four gates
                // (scalar tanhf measured about a quarter of the whole step).
                for j in 0..<H { g[j] *= 2 }
                Activation.sigmoid.apply(z, G)
                for j in 0..<H {
                    let gj = 2 * g[j] - 1
                    g[j] = gj
                    let cj = f[j] * cPrev[j] + i[j] * gj
                    c[j] = cj
                    tc[j] = 2 * cj
                }
                Activation.sigmoid.apply(tc, H)
                for j in 0..<H {
                    let tcj = 2 * tc[j] - 1
                    tc[j] = tcj
                    h[j] = o[j] * tcj
                }
            }
        }
    }

    /// On entry `dhiddens` holds dL/dh_t from outside the recurrence for every sample and step.
    /// Backpropagates through time: writes dL/dz_t into `dgates` and adds dL/dW_hh, dL/db_ih and
    /// dL/db_hh into the gradients. The caller adds dL/dW_ih and computes dL/dx from `dgates`.
    func backRecur(batch n: Int) {
        precondition(n == forwardBatch, "LSTM.backward: batch \(n) differs from the last forward's \(forwardBatch)")
        let T = steps, H = hidden, G = 4 * H
        dcell.update(repeating: 0, count: n * H)
        for t in stride(from: T - 1, through: 0, by: -1) {
            for s in 0..<n {
                let r = s * T + t
                let z = gates + r * G
                let i = z, f = z + H, g = z + 2 * H, o = z + 3 * H
                let cPrev = t > 0 ? UnsafePointer(cells + (r - 1) * H) : UnsafePointer(zeros!)
                let tc = tanhCells + r * H, dh = dhiddens + r * H, dc = dcell + s * H
                let dz = dgates + r * G
                // Eight lanes at a time (Swift does not vectorise the scalar loop: the pointers
                // may alias), then the scalar tail.
                var j = 0
                while j + 8 <= H {
                    func ld(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
                        UnsafeRawPointer(p + j).loadUnaligned(as: SIMD8<Float>.self)
                    }
                    func st(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
                        UnsafeMutableRawPointer(p + j).storeBytes(of: v, as: SIMD8<Float>.self)
                    }
                    let ij = ld(i), fj = ld(f), gj = ld(g), oj = ld(o), tcj = ld(tc), dhj = ld(dh)
                    let dcj = ld(dc) + dhj * oj * (1 - tcj * tcj)
                    st(dcj * gj * ij * (1 - ij), dz)
                    st(dcj * ld(cPrev) * fj * (1 - fj), dz + H)
                    st(dcj * ij * (1 - gj * gj), dz + 2 * H)
                    st(dhj * tcj * oj * (1 - oj), dz + 3 * H)
                    st(dcj * fj, dc)
                    j += 8
                }
                while j < H {
                    let ij = i[j], fj = f[j], gj = g[j], oj = o[j], tcj = tc[j], dhj = dh[j]
                    let dcj = dc[j] + dhj * oj * (1 - tcj * tcj)
                    dz[j] = dcj * gj * ij * (1 - ij)
                    dz[H + j] = dcj * cPrev[j] * fj * (1 - fj)
                    dz[2 * H + j] = dcj * ij * (1 - gj * gj)
                    dz[3 * H + j] = dhj * tcj * oj * (1 - oj)
                    dc[j] = dcj * fj
                    j += 1
                }
            }
            if t > 0 {
                // dh_{t-1}[n, H] += dz_t[n, 4H] · W_hh[4H, H]
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(H), Int32(G),
                            1, dgates + t * G, Int32(T * G), whh, Int32(H), 1, dhiddens + (t - 1) * H, Int32(T * H))
                // dW_hh[4H, H] += dz_tᵀ · h_{t-1}  (h_{-1} = 0: nothing for t = 0)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(G), Int32(H), Int32(n),
                            1, dgates + t * G, Int32(T * G), hiddens + (t - 1) * H, Int32(T * H), 1, dwhh, Int32(H))
            }
        }
        // db_ih, db_hh += column sums of dz over all samples and steps.
        aet_colsum_add(dbih, dgates, n * T, G)
        aet_colsum_add(dbhh, dgates, n * T, G)
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
/// Forward: Z[n*T, 4H] = X[n*T, F] · W_ihᵀ + b (one GEMM over all steps, X being the input as
/// is), then per step Z_t += h_{t-1} W_hhᵀ and the gate math. Backward: BPTT with per-step
/// GEMMs for the recurrent terms, then dW_ih += dZᵀ X and dX = dZ · W_ih as one GEMM each.
public final class LSTMEncoder: Layer {
    public let steps: Int
    public let features: Int
    public let hidden: Int
    public let inputSize: Int
    public let outputSize: Int
    let core: LSTMRecurrence

    public init(steps: Int, features: Int, hidden: Int) {
        self.steps = steps
        self.features = features
        self.hidden = hidden
        inputSize = steps * features
        outputSize = hidden
        core = LSTMRecurrence(steps: steps, input: features, hidden: hidden)
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

    public func reserve(maxBatch: Int) { core.reserve(maxBatch: maxBatch) }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= core.reservedBatch, "LSTMEncoder.forward: batch \(n) exceeds reserve(maxBatch: \(core.reservedBatch))")
        let T = steps, F = features, H = hidden, G = 4 * H
        let z = core.gates!
        // Z[n*T, 4H] = b_ih + b_hh; Z += X[n*T, F] · W_ihᵀ
        core.sumBiases()
        aet_broadcast_rows(z, core.biasSum, n * T, G)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n * T), Int32(G), Int32(F),
                    1, x, Int32(F), core.wih, Int32(F), 1, z, Int32(G))
        core.recur(batch: n)
        let hs = core.hiddens!
        for s in 0..<n { (y + s * H).update(from: hs + (s * T + T - 1) * H, count: H) }
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        let T = steps, F = features, H = hidden, G = 4 * H
        // dL/dh_t from outside: dy at the last step, nothing before.
        let dh = core.dhiddens!
        dh.update(repeating: 0, count: n * T * H)
        for s in 0..<n { (dh + (s * T + T - 1) * H).update(from: dy + s * H, count: H) }
        core.backRecur(batch: n)
        let dz = core.dgates!
        // dW_ih[4H, F] += dZ[n*T, 4H]ᵀ · X[n*T, F]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(G), Int32(F), Int32(n * T),
                    1, dz, Int32(G), x, Int32(F), 1, core.dwih, Int32(F))
        // dX[n*T, F] = dZ · W_ih
        if let dx {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n * T), Int32(F), Int32(G),
                        1, dz, Int32(G), core.wih, Int32(F), 0, dx, Int32(F))
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
/// The input is the same at every step, so its projection z W_ihᵀ + b is computed once per sample,
/// and in backward dW_ih and dz use Σ_t dZ_t (identical to summing over the repeated copies).
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
    /// [maxBatch, 4H]: z W_ihᵀ + b in forward, Σ_t dZ_t in backward.
    private var zBuffer: FloatBuffer?

    public init(code: Int, steps: Int, features: Int, hidden: Int) {
        precondition(code > 0 && features > 0, "LSTMDecoder: code and features must be positive")
        self.code = code
        self.steps = steps
        self.features = features
        self.hidden = hidden
        inputSize = code
        outputSize = steps * features
        core = LSTMRecurrence(steps: steps, input: code, hidden: hidden)
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
        zBuffer = FloatBuffer(maxBatch * 4 * hidden)
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch n: Int) {
        guard n > 0 else { return }
        precondition(n <= core.reservedBatch, "LSTMDecoder.forward: batch \(n) exceeds reserve(maxBatch: \(core.reservedBatch))")
        let T = steps, C = code, F = features, H = hidden, G = 4 * H
        let zp = zBuffer!.pointer, gates = core.gates!
        // P[n, 4H] = b_ih + b_hh + code[n, C] · W_ihᵀ, the input term of every step.
        core.sumBiases()
        aet_broadcast_rows(zp, core.biasSum, n, G)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(G), Int32(C),
                    1, x, Int32(C), core.wih, Int32(C), 1, zp, Int32(G))
        for s in 0..<n {
            for t in 0..<T { (gates + (s * T + t) * G).update(from: zp + s * G, count: G) }
        }
        core.recur(batch: n)
        // Y[n*T, F] = b_proj + H[n*T, H] · W_projᵀ
        aet_broadcast_rows(y, bp, n * T, F)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n * T), Int32(F), Int32(H),
                    1, core.hiddens, Int32(H), wp, Int32(H), 1, y, Int32(F))
    }

    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch n: Int) {
        guard n > 0 else { return }
        let T = steps, C = code, F = features, H = hidden, G = 4 * H
        let hs = core.hiddens!
        // Linear: dW_proj[F, H] += dY[n*T, F]ᵀ · H[n*T, H]; db_proj += column sums; dH = dY · W_proj.
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(F), Int32(H), Int32(n * T),
                    1, dy, Int32(F), hs, Int32(H), 1, dwp, Int32(H))
        aet_colsum_add(dbp, dy, n * T, F)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n * T), Int32(H), Int32(F),
                    1, dy, Int32(F), wp, Int32(H), 0, core.dhiddens, Int32(H))
        core.backRecur(batch: n)
        // S[n, 4H] = Σ_t dZ_t: the gradient reaching the (repeated) code's projection.
        let dz = core.dgates!, sum = zBuffer!.pointer
        for s in 0..<n {
            let acc = sum + s * G
            acc.update(from: dz + s * T * G, count: G)
            for t in 1..<T {
                let row = dz + (s * T + t) * G
                for j in 0..<G { acc[j] += row[j] }
            }
        }
        // dW_ih[4H, C] += Sᵀ · code[n, C]; dcode[n, C] = S · W_ih
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(G), Int32(C), Int32(n),
                    1, sum, Int32(G), x, Int32(C), 1, core.dwih, Int32(C))
        if let dx {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(C), Int32(G),
                        1, sum, Int32(G), core.wih, Int32(C), 0, dx, Int32(C))
        }
    }
}
