"""The loss between the denoiser's prediction and its target, with per-sample weights.

``huber`` is the pseudo-Huber loss kohya and diffusers' training scripts use,
``2 c (sqrt((p - t)^2 + c^2) - c)``: like MSE for errors well below ``huber_c``, like ``2 c |p - t|``
above it, so outlier pixels pull less.
"""

from __future__ import annotations

import torch


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float = 0.1) -> torch.Tensor:
    """The unreduced loss, in float32."""
    error = pred.float() - target.float()
    if loss_type == "mse":
        return error ** 2
    if loss_type == "l1":
        return error.abs()
    if loss_type == "huber":
        # 2c (sqrt(e^2 + c^2) - c), written without the subtraction, which loses digits in float32 for small errors
        squared = error ** 2
        return 2 * huber_c * squared / (torch.sqrt(squared + huber_c ** 2) + huber_c)
    raise ValueError(f"unknown loss_type '{loss_type}'")


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str, *, huber_c: float = 0.1,
                   weights: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over each sample (each element weighted by ``mask``, (B, 1, h, w), if any), times the sample's weight
    (if any), then the mean over the batch."""
    if weights is None and mask is None and loss_type == "mse":  # the same number, in one fused op
        return torch.nn.functional.mse_loss(pred.float(), target.float())
    elements = elementwise_loss(pred, target, loss_type, huber_c)
    if mask is not None:
        elements = elements * mask.to(elements)
    per_sample = elements.flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()
