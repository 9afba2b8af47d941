"""Fit the tiny test VAEs so they really autoencode colours and shapes.

A randomly initialised VAE decodes every latent to about the same grey noise, so samples from a tiny
model could never show what a LoRA learned. This script trains the tiny AutoencoderKL layouts of
``toolkit/testing/tiny.py`` on random coloured shapes and writes their weights, with the latent
scaling and shift it measured, to ``toolkit/testing/assets/``; ``tiny_vae`` loads them.

    python -m toolkit.testing.fit_vae [--steps 6000] [--device cuda]

Deterministic for a given device. On a GPU it takes about a minute; on 2 CPU cores, about an hour.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from toolkit.testing.tiny import ASSETS, FITTED_VAE

QUANT_CONV = {4: True, 16: False}
"""Per latent channels (the keys of ``tiny.FITTED_VAE``): SD's layout has quant convs, Z-Image's has none."""


def shapes(batch: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Images in [-1, 1]: a flat or graded ground with 2-6 flat-colour rectangles and ellipses."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size, device=device), torch.linspace(0, 1, size, device=device), indexing="ij")
    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(device)
    ground = rand(batch, 3, 1, 1) + (rand(batch, 3, 1, 1) - 0.5) * 0.6 * ys
    images = ground.clamp(0, 1).expand(batch, 3, size, size).clone()
    for _ in range(6):
        centre, half, colour = rand(batch, 2, 1, 1), 0.05 + 0.3 * rand(batch, 2, 1, 1), rand(batch, 3, 1, 1)
        dy, dx = (ys - centre[:, :1]) / half[:, :1], (xs - centre[:, 1:]) / half[:, 1:]
        ellipse = (dy ** 2 + dx ** 2) < 1
        box = (dy.abs() < 1) & (dx.abs() < 1)
        mask = torch.where(rand(batch, 1, 1, 1) < 0.5, ellipse, box) & (rand(batch, 1, 1, 1) < 0.7)
        images = torch.where(mask, colour.expand_as(images), images)
    return images * 2 - 1


def fit(channels: int, steps: int, device: torch.device, batch: int = 32, size: int = 64) -> dict[str, torch.Tensor]:
    from toolkit.testing.tiny import tiny_vae

    name = FITTED_VAE[channels].stem
    vae = tiny_vae(1, latent_channels=channels, quant_conv=QUANT_CONV[channels], fitted=False).to(device).train()
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    started = time.time()
    for step in range(steps):
        images = shapes(batch, size, generator, device)
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(posterior.sample(generator=None)).sample
        loss = (decoded - images).abs().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"{name} step {step}: L1 {loss.item():.4f} ({time.time() - started:.0f} s)", flush=True)
    return measure(vae.eval(), generator, device)


@torch.no_grad()
def measure(vae: "torch.nn.Module", generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Weights plus the scaling/shift that give the latents zero mean and unit variance."""
    images = shapes(256, 64, generator, device)
    latents = vae.encode(images).latent_dist.mode()
    error = (vae.decode(latents).sample - images).abs().mean()
    print(f"  held-out L1 {error.item():.4f}; latent mean {latents.mean().item():.4f}, std {latents.std().item():.4f}")
    state = {key: value.detach().cpu().contiguous() for key, value in vae.state_dict().items()}
    state["easel.shift_factor"] = latents.mean().cpu().reshape(())
    state["easel.scaling_factor"] = (1.0 / latents.std()).cpu().reshape(())
    return state


def main() -> int:
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    for channels, default in FITTED_VAE.items():
        path = args.out / default.name
        save_file(fit(channels, args.steps, torch.device(args.device)), str(path))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
