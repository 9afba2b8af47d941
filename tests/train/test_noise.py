"""Timestep sampling, noising, targets and loss weights over NoiseSchedule."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.models.base import NoiseSchedule
from toolkit.train.noise import (Objective, bell_weights, ddpm_timesteps, flow_sigmas, positions, shift_sigmas,
                                 snr_weights)

FLOW_TYPES = ["uniform", "sigmoid", "logit_normal", "shift", "weighted"]
N = 20_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ddpm_schedule(prediction: str = "epsilon") -> NoiseSchedule:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return NoiseSchedule("ddpm", prediction, 1000, alphas_cumprod=torch.cumprod(1 - betas, 0))  # type: ignore[arg-type]


def test_positions_follow_the_cubic_content_style_shapes() -> None:
    content, balanced, style = (positions(N, kind, gen()) for kind in ("content", "balanced", "style"))
    assert content.mean() == pytest.approx(0.25, abs=0.01)  # E[u^3]
    assert balanced.mean() == pytest.approx(0.5, abs=0.01)
    assert style.mean() == pytest.approx(0.75, abs=0.01)
    assert all(((q >= 0) & (q <= 1)).all() for q in (content, balanced, style))
    with pytest.raises(ValueError):
        positions(1, "texture", gen())


@pytest.mark.parametrize("timestep_type", FLOW_TYPES)
def test_style_favours_low_noise_and_content_high_noise(timestep_type: str) -> None:
    means = {kind: flow_sigmas(positions(N, kind, gen()), timestep_type, 3.0, 1000).mean().item()
             for kind in ("content", "balanced", "style")}
    assert means["content"] > means["balanced"] + 0.05 > means["style"] + 0.1


@pytest.mark.parametrize("timestep_type", FLOW_TYPES)
@pytest.mark.parametrize("kind", ["content", "balanced", "style"])
def test_flow_sigmas_stay_in_range(timestep_type: str, kind: str) -> None:
    sigmas = flow_sigmas(positions(N, kind, gen()), timestep_type, 3.0, 1000)
    assert sigmas.min() > 0 and sigmas.max() <= 1
    edges = flow_sigmas(torch.tensor([0.0, 1.0 - 1e-12], dtype=torch.float64), timestep_type, 3.0, 1000)
    assert torch.isfinite(edges).all() and edges[0] > edges[1]


def test_uniform_spans_one_to_one_over_n() -> None:
    sigmas = flow_sigmas(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), "uniform", 1.0, 1000)
    assert sigmas.tolist() == pytest.approx([1.0, 0.5005, 0.001])


def test_sigmoid_is_logit_normal_and_the_shifted_types_apply_the_shift() -> None:
    q = positions(N, "balanced", gen(3))
    sigmas = flow_sigmas(q, "sigmoid", 3.0, 1000)
    logits = torch.log(sigmas / (1 - sigmas))
    assert logits.mean().item() == pytest.approx(0.0, abs=0.03) and logits.std().item() == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(flow_sigmas(q, "logit_normal", 3.0, 1000), shift_sigmas(sigmas, 3.0))
    assert torch.allclose(flow_sigmas(q, "shift", 3.0, 1000), shift_sigmas(flow_sigmas(q, "uniform", 1.0, 1000), 3.0))
    assert torch.equal(shift_sigmas(sigmas, 1.0), sigmas)
    assert (shift_sigmas(sigmas, 3.0) >= sigmas).all()
    assert shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)


def test_ddpm_timesteps_are_integers_in_range_and_content_is_noisier() -> None:
    content = ddpm_timesteps(positions(N, "content", gen()), 1000)
    style = ddpm_timesteps(positions(N, "style", gen()), 1000)
    assert content.dtype == torch.long and 0 <= int(style.min()) and int(content.max()) <= 999
    assert content.float().mean() == pytest.approx(749.5, abs=10) and style.float().mean() == pytest.approx(249.5, abs=10)
    assert ddpm_timesteps(torch.tensor([0.0, 0.9999], dtype=torch.float64), 1000).tolist() == [999, 0]


def test_bell_weights_are_zero_at_the_ends_and_average_one() -> None:
    assert bell_weights(torch.tensor([0.0, 1.0], dtype=torch.float64)).abs().max() < 1e-12
    assert bell_weights(torch.rand(N, generator=gen(), dtype=torch.float64)).mean().item() == pytest.approx(1.0, abs=0.01)
    peak = bell_weights(torch.tensor([0.5], dtype=torch.float64)).item()
    assert peak == pytest.approx((1 - math.exp(-0.5)) / _mean_bell(), rel=1e-3)


def _mean_bell() -> float:
    steps = 100_000
    return sum(math.exp(-2 * ((i + 0.5) / steps - 0.5) ** 2) - math.exp(-0.5) for i in range(steps)) / steps


def test_min_snr_weights_match_a_hand_computation() -> None:
    alphas = ddpm_schedule().alphas_cumprod
    for t in (10, 300, 900):
        a = float(alphas[t])
        snr = a / (1 - a)
        eps = snr_weights(torch.tensor([snr]), 5.0, "epsilon").item()
        v = snr_weights(torch.tensor([snr]), 5.0, "v_prediction").item()
        assert eps == pytest.approx(min(snr, 5.0) / snr)
        assert v == pytest.approx(min(snr, 5.0) / (snr + 1))
    assert snr_weights(torch.tensor([20.0]), 5.0, "epsilon").item() == pytest.approx(0.25)
    assert snr_weights(torch.tensor([0.5]), 5.0, "epsilon").item() == 1.0


def test_flow_matching_noised_batch() -> None:
    latents = torch.randn(4, 4, 8, 8, generator=gen(1))
    objective = Objective(NoiseSchedule("flowmatch", "flow", 1000, shift=3.0), timestep_type="shift")
    out = objective.apply(latents, gen(2))
    s = (out.timesteps / 1000).view(-1, 1, 1, 1)
    noise = out.target + latents
    assert torch.allclose(out.noisy, (1 - s) * latents + s * noise, atol=1e-6)
    assert out.timesteps.dtype == torch.float32 and out.weights is None
    assert abs(noise.std().item() - 1) < 0.1
    again = objective.apply(latents, gen(2))
    assert torch.equal(again.noisy, out.noisy) and torch.equal(again.timesteps, out.timesteps)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_noised_batch_and_min_snr_weights(prediction: str) -> None:
    schedule = ddpm_schedule(prediction)
    latents = torch.randn(6, 4, 8, 8, generator=gen(1))
    out = Objective(schedule, min_snr_gamma=5.0).apply(latents, gen(2))
    a = schedule.alphas_cumprod[out.timesteps].float().view(-1, 1, 1, 1)
    noise = (out.noisy - a.sqrt() * latents) / (1 - a).sqrt()
    expected = noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * latents
    assert torch.allclose(out.target, expected, atol=1e-4)
    snr = (a / (1 - a)).flatten()
    assert torch.allclose(out.weights, snr_weights(snr, 5.0, prediction), atol=1e-6)


def test_weighted_multiplies_bell_and_snr_weights() -> None:
    latents = torch.zeros(5, 4, 2, 2)
    plain = Objective(ddpm_schedule(), timestep_type="weighted").apply(latents, gen(4))
    both = Objective(ddpm_schedule(), timestep_type="weighted", min_snr_gamma=1.0).apply(latents, gen(4))
    a = ddpm_schedule().alphas_cumprod[plain.timesteps]
    assert torch.allclose(both.weights, plain.weights * snr_weights(a / (1 - a), 1.0, "epsilon").float(), atol=1e-6)


def test_noise_offset_shifts_whole_channels() -> None:
    latents = torch.zeros(64, 4, 16, 16)
    schedule = NoiseSchedule("flowmatch", "flow", 1000)
    plain = Objective(schedule).apply(latents, gen(5)).target
    offset = Objective(schedule, noise_offset=1.0).apply(latents, gen(5)).target
    assert plain.mean(dim=(2, 3)).std().item() < 0.15  # about 1/16
    assert offset.mean(dim=(2, 3)).std().item() > 0.8


def test_resolution_shift_follows_the_latent_size_as_diffusers_mu_does() -> None:
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from toolkit.models.base import ResolutionShift

    by_size = ResolutionShift()
    for side in (64, 128):  # latents of 512 and 1024 px images
        assert by_size.shift(side, side) == pytest.approx(math.exp(calculate_shift((side // 2) ** 2)))
    schedule = NoiseSchedule("flowmatch", "flow", 1000, shift=1.0, resolution_shift=by_size)
    objective = Objective(schedule, timestep_type="shift")
    small, large = (objective.apply(torch.zeros(256, 4, side, side), gen(3)).timesteps for side in (16, 128))
    fixed = Objective(NoiseSchedule("flowmatch", "flow", 1000, shift=by_size.shift(128, 128)), timestep_type="shift")
    assert torch.allclose(large, fixed.apply(torch.zeros(256, 4, 128, 128), gen(3)).timesteps)
    assert small.mean() < large.mean(), "larger images train at noisier timesteps"


def test_qwen_images_scheduler_config_shifts_training_as_its_sigmas() -> None:
    """Qwen-Image's dynamic-shifting config: the training shift for a latent size is the one its scheduler samples that
    size with (the pipeline computes mu from the packed token count and passes it to set_timesteps)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from toolkit.models.base import ResolutionShift

    config = {"use_dynamic_shifting": True, "base_image_seq_len": 256, "max_image_seq_len": 8192, "base_shift": 0.5,
              "max_shift": 0.9, "time_shift_type": "exponential", "shift": 1.0, "num_train_timesteps": 1000}
    by_size = ResolutionShift.from_scheduler_config(config)
    assert by_size is not None and by_size.shift(166, 166) == pytest.approx(2.30, abs=0.01)  # 1328 px: 6889 tokens
    for side in (64, 166):
        mu = 0.5 + (0.9 - 0.5) / (8192 - 256) * ((side // 2) ** 2 - 256)
        scheduler = FlowMatchEulerDiscreteScheduler(**config)
        linear = [1.0 - i / 10 for i in range(10)]
        scheduler.set_timesteps(sigmas=linear, mu=mu)
        expected = shift_sigmas(torch.tensor(linear, dtype=torch.float64), by_size.shift(side, side))
        assert torch.allclose(scheduler.sigmas[:-1].double(), expected, atol=1e-6)
