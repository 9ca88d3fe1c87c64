#!/usr/bin/env python3
"""The same models as aetrain's presets, trained by PyTorch for the side-by-side rows of
Launch/bench.sh (PyTorch is optional: bench.sh runs this only when `import torch` works).

One thread, the same architectures, losses, batch sizes and data as aetrain: Fashion-MNIST (UInt8
IDX files) converted to float per batch, one optimizer step per batch. f32 uses Adam(fused=True);
bf16 runs the forward pass and loss under torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's
mixed precision: bf16 matrix products and convolutions, f32 weights and optimizer).

Usage: torch_bench.py DATA_DIR MODEL PRECISION BATCH STEPS   (prints one JSON line)
"""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def images(data_dir):
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            raw = gzip.open(path).read() if name.endswith(".gz") else open(path, "rb").read()
            return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)
    sys.exit(f"torch_bench: no train-images-idx3-ubyte(.gz) in {data_dir}")


def mlp(hidden, latent, code_act, variational=False):
    def stack(sizes, last_act):
        layers = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
            elif last_act:
                layers.append(last_act())
        return nn.Sequential(*layers)

    enc = stack([784] + hidden + [2 * latent if variational else latent], code_act)
    dec = stack([latent] + hidden[::-1] + [784], None)
    return enc, dec


class AE(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.kind = model
        if model == "mlp3":
            self.encoder, self.decoder = mlp([128, 64, 12], 3, None)
        elif model == "deep32":
            self.encoder, self.decoder = mlp([128, 64], 32, nn.ReLU)
        elif model == "vae":
            self.encoder, self.decoder = mlp([512], 2, None, variational=True)
        elif model == "conv":
            self.encoder = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.decoder = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
                                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
                                         nn.Conv2d(32, 1, 3, padding=1))
        elif model == "lstm":
            self.enc_lstm = nn.LSTM(28, 64, batch_first=True)
            self.dec_lstm = nn.LSTM(64, 64, batch_first=True)
            self.proj = nn.Linear(64, 28)
        else:
            sys.exit(f"torch_bench: no PyTorch twin for model {model}")

    def loss(self, x):
        """x: [n, 784] in [0, 1]. The loss aetrain computes for the preset (logits, fused sigmoid)."""
        n = x.shape[0]
        if self.kind == "conv":
            z = self.decoder(self.encoder(x.view(n, 1, 28, 28))).view(n, 784)
            return F.binary_cross_entropy_with_logits(z.float(), x)
        if self.kind == "lstm":
            _, (h, _) = self.enc_lstm(x.view(n, 28, 28))
            out, _ = self.dec_lstm(h[-1].unsqueeze(1).repeat(1, 28, 1))
            z = self.proj(out).reshape(n, 784)
            return F.binary_cross_entropy_with_logits(z.float(), x)
        if self.kind == "vae":
            s = self.encoder(x).float()
            mu, logvar = s[:, :2], s[:, 2:]
            zc = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = self.decoder(zc).float()
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
            kl = -0.5 * torch.sum(1 + logvar - mu * mu - logvar.exp()) / n
            return rec + kl
        z = self.decoder(self.encoder(x)).float()
        if self.kind == "mlp3":
            return F.mse_loss(torch.sigmoid(z), x)
        return F.binary_cross_entropy_with_logits(z, x)


def main():
    data_dir, model, precision, batch, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    u8 = images(data_dir)
    net = AE(model)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    perm = np.random.default_rng(0).permutation(len(u8))
    warm = max(2, steps // 10)

    def step(i):
        idx = perm[(i * batch) % (len(u8) - batch):][:batch]
        x = torch.from_numpy(u8[idx]).float().div_(255)
        opt.zero_grad(set_to_none=True)
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = net.loss(x)
        else:
            loss = net.loss(x)
        loss.backward()
        opt.step()
        return loss

    for i in range(warm):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(warm + i)
    dt = time.perf_counter() - t0
    print(json.dumps({"model": model, "precision": precision, "global_batch_size": batch, "steps": steps,
                      "samples_per_second": batch * steps / dt, "loss": float(loss.detach()), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main()
