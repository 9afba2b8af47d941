"""Noising math over an adapter's ``NoiseSchedule``: timestep sampling, noisy inputs, targets, loss weights.

Timesteps are drawn as a position ``q`` in [0, 1) along the schedule ordered from most to least noise
(ai-toolkit indexes its 1000-entry training schedule the same way), then mapped to a noise level:

- ``content_or_style`` (ai-toolkit's cubic sampling, from the T2I-Adapter paper, section 3.4):
  ``content``: q = u^3, which favours the start of the schedule, i.e. high noise (layout, composition);
  ``style``: q = 1 - u^3, favouring the end, i.e. low noise (texture, colour); ``balanced``: q = u.
- ``timestep_type`` (flow matching) gives the noise level sigma at position q:
  ``uniform``: sigma = 1 - q (linearly from 1 down to 1/N, like ai-toolkit's ``linspace(1000, 1)``);
  ``sigmoid``: sigma = sigmoid(Phi^-1(1 - q)), the quantiles of the logit-normal(0, 1) distribution
  (ai-toolkit draws a sorted table of ``sigmoid(randn)`` per step; this is its exact limit);
  ``logit_normal``: the sigmoid draw followed by the schedule's ``shift`` (diffusers' SD3/Flux scripts:
  logit-normal density, then the shifted schedule); ``shift``: the uniform draw followed by the shift
  (ai-toolkit's ``shift``); ``weighted``: uniform, with the loss weighted by ai-toolkit's bell curve over
  the schedule (``exp(-2 (q - 1/2)^2)``, shifted to 0 at the ends and scaled to mean 1).
  The shift is sigma' = shift * sigma / (1 + (shift - 1) * sigma); a schedule with a ``resolution_shift``
  (FLUX, Qwen-Image) takes it from the batch's latent size (exp(mu), as its sampling pipeline does).
- DDPM models (SD 1.5, SDXL) draw integer timesteps uniformly along the schedule (position q maps to
  t = N - 1 - floor(q N)), as ai-toolkit and kohya do; ``content_or_style`` and ``weighted`` apply, the
  other timestep types are flow-matching shapes and are not used.

Min-SNR weighting (Hang et al. 2023) for DDPM: w = min(SNR, gamma) / SNR for epsilon targets and
min(SNR, gamma) / (SNR + 1) for v-prediction, SNR = alphas_cumprod / (1 - alphas_cumprod).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from toolkit.config.blocks import TrainConfig
    from toolkit.models.base import NoiseSchedule

_EDGE = 1e-5


def positions(n: int, content_or_style: str, generator: torch.Generator) -> torch.Tensor:
    """Positions q in [0, 1) along the schedule (0 = most noise), shaped by content / style / balanced."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if content_or_style == "content":
        return u ** 3
    if content_or_style == "style":
        return 1 - u ** 3
    if content_or_style == "balanced":
        return u
    raise ValueError(f"unknown content_or_style '{content_or_style}'")


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching timestep shift; shift 1 leaves sigmas unchanged."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(q: torch.Tensor, timestep_type: str, shift: float, num_train_timesteps: int) -> torch.Tensor:
    """Noise levels in (0, 1] for positions ``q`` under a timestep type."""
    linear = 1 - q * (1 - 1 / num_train_timesteps)
    if timestep_type in ("uniform", "weighted"):
        return linear
    if timestep_type == "shift":
        return shift_sigmas(linear, shift)
    logit_normal = torch.sigmoid(torch.special.ndtri((1 - q).clamp(_EDGE, 1 - _EDGE)))
    if timestep_type == "sigmoid":
        return logit_normal
    if timestep_type == "logit_normal":
        return shift_sigmas(logit_normal, shift)
    raise ValueError(f"unknown timestep_type '{timestep_type}'")


def ddpm_timesteps(q: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Integer timesteps for positions ``q`` (0 = the noisiest timestep N - 1)."""
    return (num_train_timesteps - 1 - torch.floor(q * num_train_timesteps)).clamp(0, num_train_timesteps - 1).long()


def bell_weights(q: torch.Tensor) -> torch.Tensor:
    """ai-toolkit's ``weighted`` loss weights: a bell over the schedule, 0 at both ends, mean 1."""
    floor = math.exp(-0.5)
    mean = math.sqrt(math.pi / 2) * math.erf(math.sqrt(0.5)) - floor  # the integral of the bell over [0, 1]
    return (torch.exp(-2 * (q - 0.5) ** 2) - floor) / mean


def snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon or v-prediction targets."""
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


@dataclass
class Noised:
    """One batch prepared for the denoiser."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None
    """Per-sample loss weights, or None for equal weights."""


@dataclass(frozen=True)
class Objective:
    """What the denoiser learns: the schedule plus the config's sampling and weighting choices."""

    schedule: "NoiseSchedule"
    timestep_type: str = "sigmoid"
    content_or_style: str = "balanced"
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None

    def noise_like(self, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise (float32, on the CPU generator), plus the per-channel offset noise if set."""
        noise = torch.randn(latents.shape, generator=generator)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn((*latents.shape[:2], *[1] * (latents.dim() - 2)), generator=generator)
        return noise

    def apply(self, latents: torch.Tensor, generator: torch.Generator) -> Noised:
        """Draw noise and timesteps for ``latents`` (B, C, ...) and build the noisy input and the target."""
        schedule = self.schedule
        q = positions(latents.shape[0], self.content_or_style, generator)
        noise = self.noise_like(latents, generator).to(latents.device)
        x0 = latents.float()
        shape = (-1, *[1] * (latents.dim() - 1))
        weights = bell_weights(q).float() if self.timestep_type == "weighted" else None
        if schedule.kind == "flowmatch":
            by_size = schedule.resolution_shift
            shift = by_size.shift(latents.shape[-2], latents.shape[-1]) if by_size is not None else schedule.shift
            sigmas = flow_sigmas(q, self.timestep_type, shift, schedule.num_train_timesteps).float()
            s = sigmas.to(latents.device).view(shape)
            noisy = (1 - s) * x0 + s * noise
            timesteps = (sigmas * schedule.num_train_timesteps).to(latents.device)
            return Noised(noisy.to(latents.dtype), timesteps, noise - x0, _to(weights, latents))
        if schedule.alphas_cumprod is None:
            raise ValueError("a ddpm NoiseSchedule needs alphas_cumprod")
        steps = ddpm_timesteps(q, schedule.num_train_timesteps)
        alphas = schedule.alphas_cumprod.to(torch.float64)[steps]
        a = alphas.sqrt().float().to(latents.device).view(shape)
        b = (1 - alphas).sqrt().float().to(latents.device).view(shape)
        noisy = a * x0 + b * noise
        target = a * noise - b * x0 if schedule.prediction_type == "v_prediction" else noise
        if self.min_snr_gamma:
            snr = snr_weights(alphas / (1 - alphas), self.min_snr_gamma, schedule.prediction_type).float()
            weights = snr if weights is None else weights * snr
        return Noised(noisy.to(latents.dtype), steps.to(latents.device), target, _to(weights, latents))


def objective_for(schedule: "NoiseSchedule", train: "TrainConfig") -> Objective:
    """The objective of a run: the model's noise schedule with ``train``'s timestep sampling and loss weighting."""
    from toolkit.log import log

    if schedule.kind == "flowmatch" and train.min_snr_gamma:
        log.warning("warning: train.min_snr_gamma weights DDPM (SD) losses; this model trains with flow matching, so it is not used.")
    if schedule.kind == "ddpm" and train.timestep_type not in ("uniform", "weighted", "sigmoid"):
        log.warning(f"warning: train.timestep_type {train.timestep_type} shapes flow-matching timesteps; this DDPM model draws them uniformly.")
    return Objective(schedule, timestep_type=train.timestep_type, content_or_style=train.content_or_style,
                     noise_offset=train.noise_offset, min_snr_gamma=train.min_snr_gamma if schedule.kind == "ddpm" else None)


def _to(weights: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if weights is None else weights.to(device=like.device, dtype=torch.float32)
