import Foundation

/// One layer of a model description. Shapes are inferred from the input image shape.
public enum LayerSpec: Codable, Equatable, Sendable {
    case dense(units: Int, activation: Activation)
    case conv(channels: Int, kernel: Int, activation: Activation)
    case maxPool
    case upsample
    /// LSTM over the image rows (28 steps of 28 pixels); outputs the last hidden state.
    case lstmEncoder(hidden: Int)
    /// The code repeated at every step into an LSTM, each step's hidden state mapped to a row.
    case lstmDecoder(hidden: Int)
}

/// Regularisers that act on the code (see Penalties.swift).
public enum PenaltyKind: String, Codable, Sendable {
    case none, l1, kl, contractive
}

/// A model: encoder and decoder layer lists, the code size and the variant. The decoder's last
/// layer is linear; its output goes through the sigmoid inside the loss head (fused with the loss).
public struct ModelSpec: Codable, Equatable, Sendable {
    public var name: String
    public var summary: String
    public var encoder: [LayerSpec]
    public var decoder: [LayerSpec]
    /// Variational: the encoder's last layer outputs 2·latent values, [μ | log σ²].
    public var variational: Bool
    public var penalty: PenaltyKind
    public var defaultInit: InitScheme
    public var defaultLoss: LossKind
    /// Noise applied to training inputs unless --noise says otherwise.
    public var defaultNoise: String?
    /// The penalty weight (sparsity or contractive λ) unless a flag says otherwise.
    public var defaultPenaltyWeight: Float? = nil

    public var imageShape: [Int] { [1, 28, 28] }
}

extension ModelSpec {
    static func mirroredMLP(name: String, summary: String, hidden: [Int], latent: Int, act: Activation,
                            codeActivation: Activation, initScheme: InitScheme, loss: LossKind,
                            penalty: PenaltyKind = .none, variational: Bool = false,
                            noise: String? = nil, penaltyWeight: Float? = nil) -> ModelSpec {
        var enc = hidden.map { LayerSpec.dense(units: $0, activation: act) }
        enc.append(.dense(units: variational ? 2 * latent : latent, activation: codeActivation))
        var dec = hidden.reversed().map { LayerSpec.dense(units: $0, activation: act) }
        dec.append(.dense(units: 784, activation: .identity))
        return ModelSpec(name: name, summary: summary, encoder: enc, decoder: dec, variational: variational,
                         penalty: penalty, defaultInit: initScheme, defaultLoss: loss, defaultNoise: noise,
                         defaultPenaltyWeight: penaltyWeight)
    }

    /// The presets listed by `aetrain models`.
    public static let presets: [ModelSpec] = [
        mirroredMLP(name: "mlp3", summary: "784-128-64-12-3 mirrored, ReLU, linear code (PyTorch Fashion-MNIST tutorial)",
                    hidden: [128, 64, 12], latent: 3, act: .relu, codeActivation: .identity,
                    initScheme: .torch, loss: .mse),
        mirroredMLP(name: "shallow32", summary: "784-32 ReLU, 32-784 sigmoid (Keras simplest autoencoder)",
                    hidden: [], latent: 32, act: .relu, codeActivation: .relu, initScheme: .glorot, loss: .bce),
        mirroredMLP(name: "deep32", summary: "784-128-64-32 ReLU, 64-128-784 (Keras deep autoencoder)",
                    hidden: [128, 64], latent: 32, act: .relu, codeActivation: .relu, initScheme: .glorot, loss: .bce),
        ModelSpec(name: "conv", summary: "Conv 1→32→32 3×3 + MaxPool, code 7×7×32, Upsample decoder (Keras conv AE)",
                  encoder: [.conv(channels: 32, kernel: 3, activation: .relu), .maxPool,
                            .conv(channels: 32, kernel: 3, activation: .relu), .maxPool],
                  decoder: [.conv(channels: 32, kernel: 3, activation: .relu), .upsample,
                            .conv(channels: 32, kernel: 3, activation: .relu), .upsample,
                            .conv(channels: 1, kernel: 3, activation: .identity)],
                  variational: false, penalty: .none, defaultInit: .glorot, defaultLoss: .bce, defaultNoise: nil),
        mirroredMLP(name: "denoising", summary: "deep32 trained on corrupted inputs (default --noise gaussian:0.5)",
                    hidden: [128, 64], latent: 32, act: .relu, codeActivation: .relu, initScheme: .glorot, loss: .bce,
                    noise: "gaussian:0.5"),
        mirroredMLP(name: "sparse-l1", summary: "784-256 overcomplete-ish ReLU code with λ·mean|h| (--sparsity-weight)",
                    hidden: [], latent: 256, act: .relu, codeActivation: .relu, initScheme: .glorot, loss: .bce,
                    penalty: .l1),
        mirroredMLP(name: "sparse-kl", summary: "784-196 sigmoid code with KL(ρ‖ρ̂) sparsity on the global batch",
                    hidden: [], latent: 196, act: .relu, codeActivation: .sigmoid, initScheme: .glorot, loss: .bce,
                    penalty: .kl, penaltyWeight: 3e-3),
        mirroredMLP(name: "contractive", summary: "784-256 sigmoid encoder with λ·‖J_f(x)‖²_F, exact (Rifai et al. 2011)",
                    hidden: [], latent: 256, act: .relu, codeActivation: .sigmoid, initScheme: .glorot, loss: .bce,
                    penalty: .contractive),
        ModelSpec(name: "lstm", summary: "sequence AE over image rows: LSTM(28→64) code = last hidden; LSTM(64→64) over the repeated code, Linear(64→28) per row",
                  encoder: [.lstmEncoder(hidden: 64)], decoder: [.lstmDecoder(hidden: 64)],
                  variational: false, penalty: .none, defaultInit: .glorot, defaultLoss: .bce, defaultNoise: nil),
        mirroredMLP(name: "vae", summary: "784-512-(μ, log σ²: 2) VAE, BCE summed per image + β·KL",
                    hidden: [512], latent: 2, act: .relu, codeActivation: .identity, initScheme: .torch, loss: .bce,
                    variational: true),
    ]

    public static func preset(_ name: String) -> ModelSpec? { presets.first { $0.name == name } }

    /// A custom MLP: `--encoder 256,64 --latent 16`.
    public static func custom(hidden: [Int], latent: Int, activation: Activation) -> ModelSpec {
        mirroredMLP(name: "custom", summary: "custom MLP " + (["784"] + hidden.map(String.init) + [String(latent)]).joined(separator: "-"),
                    hidden: hidden, latent: latent, act: activation, codeActivation: .identity,
                    initScheme: .torch, loss: .mse)
    }

    /// Code size: the number of latent values per image.
    public var latentSize: Int {
        guard let last = (try? Self.shapes(encoder, input: imageShape))?.last else { return 0 }
        let n = last.reduce(1, *)
        return variational ? n / 2 : n
    }

    /// Output shapes after each layer, given an input shape [c, h, w] (dense layers flatten).
    public static func shapes(_ layers: [LayerSpec], input: [Int]) throws -> [[Int]] {
        var shape = input
        var out: [[Int]] = []
        for l in layers {
            switch l {
            case .dense(let units, _): shape = [units]
            case .conv(let ch, _, _):
                guard shape.count == 3 else { throw AETError.usage("conv layer needs an image-shaped input, got \(shape)") }
                shape = [ch, shape[1], shape[2]]
            case .maxPool:
                guard shape.count == 3, shape[1] % 2 == 0, shape[2] % 2 == 0 else {
                    throw AETError.usage("maxpool needs an even image-shaped input, got \(shape)")
                }
                shape = [shape[0], shape[1] / 2, shape[2] / 2]
            case .upsample:
                guard shape.count == 3 else { throw AETError.usage("upsample needs an image-shaped input, got \(shape)") }
                shape = [shape[0], shape[1] * 2, shape[2] * 2]
            case .lstmEncoder(let h):
                shape = [h]
            case .lstmDecoder:
                shape = [1, 28, 28]
            }
            // Bounded at every layer, so that no later product can overflow.
            guard shape.allSatisfy({ $0 > 0 && $0 <= Autoencoder.maxLayerFloats }) else {
                throw AETError.usage("layer output shape \(shape) out of range (every dimension must be 1...\(Autoencoder.maxLayerFloats))")
            }
            out.append(shape)
        }
        return out
    }
}

extension ModelSpec {
    /// The preset with another code size (MLP presets only).
    public func withLatent(_ l: Int) throws -> ModelSpec {
        guard case .dense(_, let act)? = encoder.last else {
            throw AETError.usage("--latent: model \(name) has a convolutional code; its size is fixed")
        }
        var s = self
        s.encoder[s.encoder.count - 1] = .dense(units: variational ? 2 * l : l, activation: act)
        return s
    }
}
