"""The training losses and per-sample weighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from toolkit.train.loss import diffusion_loss, elementwise_loss


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 5, 5, generator=generator), torch.randn(3, 4, 5, 5, generator=generator)


def test_mse_and_l1_match_torch() -> None:
    pred, target = pair()
    assert diffusion_loss(pred, target, "mse").item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-6)
    assert diffusion_loss(pred, target, "l1").item() == pytest.approx(F.l1_loss(pred, target).item(), rel=1e-6)


def test_pseudo_huber_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.01, 3.0]])
    target = torch.zeros(1, 3)
    values = elementwise_loss(pred, target, "huber", huber_c=0.1)[0].tolist()
    expected = [2 * 0.1 * (math.sqrt(e * e + 0.01) - 0.1) for e in (0.0, 0.01, 3.0)]
    assert values == pytest.approx(expected, rel=1e-6)  # float32 cancellation would cost 1e-5 at e = 0.01
    assert values[1] == pytest.approx(0.01 ** 2, rel=0.01)  # like MSE for small errors
    assert values[2] == pytest.approx(2 * 0.1 * 3.0 - 2 * 0.1 * 0.1, rel=0.01)  # like 2c|e| for large ones


def test_per_sample_weights() -> None:
    pred, target = pair()
    weights = torch.tensor([0.0, 1.0, 3.0])
    per_sample = ((pred - target) ** 2).flatten(1).mean(1)
    assert diffusion_loss(pred, target, "mse", weights=weights).item() == pytest.approx((per_sample * weights).mean().item(), rel=1e-6)


def test_half_precision_inputs_give_a_float32_loss() -> None:
    pred, target = pair()
    assert diffusion_loss(pred.bfloat16(), target, "mse").dtype == torch.float32
    with pytest.raises(ValueError):
        diffusion_loss(pred, target, "hinge")
