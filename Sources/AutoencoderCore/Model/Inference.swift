import Foundation

/// A model run over a split, without training: the test metrics (train's epoch evaluation and
/// `eval`, divided across ranks), the codes (`encode`, the report's latent plot) and the
/// reconstructions (`reconstruct`, `denoise`, `anomaly`, the report's figures).
public enum Inference {
    /// Per-pixel reconstruction MSE and BCE on clean inputs (VAE: decoded from μ), and the mean
    /// per-sample penalty (VAE KL). The split is divided across ranks and the sums all-reduced.
    public static func evaluate(model: Autoencoder, loader: BatchLoader, comm: Communicator)
        -> (mse: Double, bce: Double, pen: Double) {
        let (lo, hi) = Trainer.slice(rank: comm.rank, size: comm.size, count: loader.data.count)
        var sums = [0.0, 0.0, 0.0, Double(hi - lo)]
        var i = lo
        while i < hi {
            let n = min(model.maxBatch, hi - i)
            loader.fill(model.target.pointer, start: i, count: n)
            let e = model.evaluate(n)
            sums[0] += e.sse; sums[1] += e.bce; sums[2] += e.penalty
            i += n
        }
        comm.allreduceSum(&sums, count: 4, what: "evaluation all-reduce")
        let pixels = sums[3] * Double(model.inputDim)
        return (sums[0] / pixels, sums[1] / pixels, sums[2] / max(sums[3], 1))
    }

    /// Codes (μ for the VAE) of samples [start, start+count), [count, latent].
    public static func encode(model: Autoencoder, loader: BatchLoader, start: Int = 0, count: Int) -> [Float] {
        let L = model.latent
        var out = [Float](repeating: 0, count: count * L)
        var i = 0
        model.corrupted = false
        while i < count {
            let n = min(model.maxBatch, count - i)
            loader.fill(model.target.pointer, start: start + i, count: n)
            model.encode(n)
            let stride = model.spec.variational ? 2 * L : L
            for s in 0..<n {
                for j in 0..<L { out[(i + s) * L + j] = model.code[s * stride + j] }
            }
            i += n
        }
        return out
    }

    /// Reconstructions (sigmoid outputs) of samples [start, start+count), [count, 784].
    /// With `noise`, the inputs are corrupted first (keyed by `seed`), for denoising views.
    public static func reconstruct(model: Autoencoder, loader: BatchLoader, start: Int = 0, count: Int,
                                   noise: NoiseSpec? = nil, seed: UInt64 = 0) -> (noisy: [Float], output: [Float]) {
        let d = model.inputDim
        var out = [Float](repeating: 0, count: count * d)
        var noisy = [Float](repeating: 0, count: noise == nil ? 0 : count * d)
        var i = 0
        while i < count {
            let n = min(model.maxBatch, count - i)
            loader.fill(model.target.pointer, start: start + i, count: n)
            if let noise {
                noise.apply(clean: model.target.pointer, noisy: model.input.pointer, count: n, dim: d, seed: seed,
                            key: -1, firstIndex: start + i)
                for k in 0..<(n * d) { noisy[i * d + k] = model.input[k] }
                model.corrupted = true
            } else {
                model.corrupted = false
            }
            model.forward(n, noise: nil)
            for k in 0..<(n * d) { out[i * d + k] = logistic(model.logits[k]) }
            i += n
        }
        model.corrupted = false
        return (noisy, out)
    }
}

extension Checkpoint {
    /// Loads a validated checkpoint into a fresh model sized for `maxBatch` samples.
    public static func loadModel(_ path: String, maxBatch: Int = 256) throws -> (Loaded, Autoencoder) {
        let c = try read(path)
        let model = try Autoencoder(spec: c.config.model, objective: c.config.objective, maxBatch: maxBatch)
        try restore(c, into: model, adam: nil)
        return (c, model)
    }
}
