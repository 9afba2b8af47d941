"""ai-toolkit's training features, each shown by its effect: a masked region contributes no gradient, loss
multipliers and network weights change the step as asked, DOP and blank-prompt preservation keep the base
model's output, previews start at sample_start_step (and force_first_sample makes them on a resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train.fakes import FAKE_ARCH, FakeAdapter, FakeBatch
from tests.train.harness import run_main, write_config
from tests.train.test_trainer import read_lora, run_dir
from toolkit.config.blocks import ModelConfig, NetworkConfig, TrainConfig
from toolkit.models.base import ImageInfo
from toolkit.network.network import Network
from toolkit.train.noise import Objective
from toolkit.train.preservation import network_off, preservation_for
from toolkit.train.step import DiffusionStep


def _step(**train: object) -> tuple[DiffusionStep, FakeAdapter, Network]:
    adapter = FakeAdapter.load(ModelConfig(name_or_path="tiny:fake", arch="fake"), FAKE_ARCH, device=torch.device("cpu"),
                               dtype=torch.float32)
    adapter.denoiser.requires_grad_(False)
    network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=4))
    with torch.no_grad():
        for name, param in network.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    config = TrainConfig(**train)
    step = DiffusionStep(adapter, network, Objective(adapter.noise_schedule(), timestep_type="sigmoid"), loss_type="mse",
                         huber_c=0.1, train_text_encoder=False, generator=torch.Generator().manual_seed(0),
                         preservation=preservation_for(config, "sks"))
    return step, adapter, network


def _batch(**fields: object) -> FakeBatch:
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    info = [ImageInfo((16, 16), (0, 0), (16, 16))] * 2
    return FakeBatch(pixels=None, latents=latents, captions=["sks square", "sks circle"], cond=None, image_info=info,
                     paths=[Path("a"), Path("b")], **fields)


def _loss(step: DiffusionStep, batch: FakeBatch) -> torch.Tensor:
    step.generator.manual_seed(0)
    return step(batch)


def test_a_masked_region_contributes_no_gradient():
    step, adapter, _ = _step()
    captured = {}
    predict = adapter.predict

    def keep(*args, **kwargs):
        captured["prediction"] = out = predict(*args, **kwargs)
        out.retain_grad()
        return out

    adapter.predict = keep
    masks = torch.ones(2, 1, 16, 16)
    masks[:, :, :, :8] = 0  # the left half of every image is masked out
    _loss(step, _batch(masks=masks)).backward()
    grad = captured["prediction"].grad
    assert float(grad[..., :2].abs().max()) == 0.0 and float(grad[..., 2:].abs().min()) > 0


def test_loss_multiplier_scales_each_samples_loss_and_network_weight_scales_the_adapter():
    step, _, network = _step()
    plain = _loss(step, _batch())
    assert torch.allclose(_loss(step, _batch(loss_weights=torch.tensor([2.0, 2.0]))), 2 * plain)
    assert not torch.allclose(_loss(step, _batch(loss_weights=torch.tensor([2.0, 0.0]))), plain)
    with network_off(network):
        base = _loss(step, _batch())
    assert torch.allclose(_loss(step, _batch(network_weight=0.0)), base)
    assert not torch.allclose(_loss(step, _batch(network_weight=0.5)), plain) and network.multiplier == 1.0


@pytest.mark.parametrize("key", ["diff_output_preservation", "blank_prompt_preservation"])
def test_preservation_adds_a_term_that_the_base_model_does_not_pay(key):
    step, _, network = _step(**{key: True, "diff_output_preservation_class": "shape"})
    preservation = step.preservation
    with_term = _loss(step, _batch())
    step.preservation = None
    assert with_term.item() > _loss(step, _batch()).item(), "an adapter that moves the output pays for it"
    with torch.no_grad():
        for name, param in network.named_parameters():
            if "lora_B" in name:
                param.zero_()
    without = _loss(step, _batch())
    step.preservation = preservation
    assert torch.allclose(_loss(step, _batch()), without), "the base model's own output costs nothing"


def _class_output_change(tmp_path: Path, **train: object) -> float:
    """How far the trained LoRA moves the prediction for the class prompt ("shape ...") from the base model's."""
    config = write_config(tmp_path, sample=None, train={"steps": 8, "lr": 5e-2, **train})
    assert run_main([str(config)]) == 0
    adapter = FakeAdapter.load(ModelConfig(name_or_path="tiny:fake", arch="fake"), FAKE_ARCH, device=torch.device("cpu"),
                               dtype=torch.float32)
    network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=4, linear_alpha=4))
    network.load_state_dict(read_lora(run_dir(tmp_path) / "fakerun.safetensors"))
    generator = torch.Generator().manual_seed(9)
    noisy, timesteps = torch.randn(4, 4, 4, 4, generator=generator), torch.tensor([900.0, 600.0, 300.0, 100.0])
    with torch.no_grad():
        cond = adapter.encode_prompts([f"a shape number {i}" for i in range(4)])
        trained = adapter.predict(noisy, timesteps, cond)
        with network_off(network):
            base = adapter.predict(noisy, timesteps, cond)
    return float((trained - base).pow(2).mean())


def test_diff_output_preservation_keeps_the_class_prompt_close_to_the_base_model(tmp_path):
    free = _class_output_change(tmp_path / "free")
    kept = _class_output_change(tmp_path / "dop", diff_output_preservation=True, diff_output_preservation_class="shape",
                                diff_output_preservation_multiplier=4.0)
    assert kept < 0.5 * free, (kept, free)


def test_previews_start_at_sample_start_step_and_force_first_sample_makes_them_on_resume(tmp_path):
    config = write_config(tmp_path, train={"steps": 4}, save={"save_every": 2},
                          sample={"sample_every": 1, "sample_start_step": 3})
    assert run_main([str(config)]) == 0
    samples = run_dir(tmp_path) / "samples"
    assert sorted(p.name[:9] for p in samples.glob("*_00.png")) == ["000000000", "000000003", "000000004"]
    made = (samples / "000000004_00.png").stat().st_mtime_ns
    plain = write_config(tmp_path, train={"steps": 5}, save={"save_every": 2}, sample={"sample_every": 100})
    assert run_main([str(plain)]) == 0
    assert (samples / "000000004_00.png").stat().st_mtime_ns == made, "a resumed run makes no first previews"
    ended = (samples / "000000005_00.png").stat().st_mtime_ns  # the last previews of that run
    forced = write_config(tmp_path, train={"steps": 6, "force_first_sample": True}, save={"save_every": 2},
                          sample={"sample_every": 100})
    assert run_main([str(forced)]) == 0
    assert (samples / "000000005_00.png").stat().st_mtime_ns > ended, "force_first_sample: previews before step 6"
    assert (samples / "000000006_00.png").is_file()
