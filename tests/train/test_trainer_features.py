"""Trainer features end to end on the fake architecture, through run.py: previews leave training alone, the
EMA weights are what is saved and previewed, target_modules / ignore_if_contains choose the layers of every
trained component, the saved header carries the run's facts, and fp16 steps go through the loss scaler.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from tests.train.fakes import FAKE_ARCH, FakeAdapter
from tests.train.harness import run_main, write_config
from tests.train.test_trainer import NO_SAMPLES, read_lora, run_dir
from toolkit.config.blocks import ModelConfig, NetworkConfig
from toolkit.models.base import GenerateRequest
from toolkit.network.network import Network
from toolkit.train.ema import EMA
from toolkit.train.logs import read_losses


def losses(folder: Path) -> list[tuple[float, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in read_losses(folder / "loss.csv")]


def test_previews_do_not_change_the_training(tmp_path: Path) -> None:
    # dropout draws from the global generator, and so does the fake's generate: only restoring it keeps the runs equal
    sections = dict(train={"steps": 4}, network={"dropout": 0.3})
    sampled = write_config(tmp_path / "sampled", sample={"sample_every": 1}, **sections)
    plain = write_config(tmp_path / "plain", **NO_SAMPLES, **sections)
    assert run_main([str(sampled)]) == 0 and run_main([str(plain)]) == 0
    assert len(list((run_dir(tmp_path / "sampled") / "samples").glob("*_00.png"))) == 5  # before, steps 1-3, end
    assert losses(run_dir(tmp_path / "sampled")) == losses(run_dir(tmp_path / "plain"))
    a = load_file(run_dir(tmp_path / "sampled") / "fakerun.safetensors")
    b = load_file(run_dir(tmp_path / "plain") / "fakerun.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_ema_weights_are_saved_and_previewed(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 4, "lr": 3e-2, "ema_config": {"use_ema": True, "ema_decay": 0.9}},
                          save={"save_every": 2}, sample={"sample_every": 100, "prompts": ["[trigger] square"]})
    assert run_main([str(config)]) == 0
    folder = run_dir(tmp_path)
    state = torch.load(folder / "fakerun_000000004.state.pt", weights_only=True)
    adapter = FakeAdapter.load(ModelConfig(name_or_path="tiny:fake", arch="fake"), FAKE_ARCH, device=torch.device("cpu"), dtype=torch.float32)
    network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=4, linear_alpha=4))
    network.load_state_dict(state["network"])  # the trained (raw) weights
    ema = EMA(list(network.parameters()), 0.9)
    ema.load_state_dict(state["ema"])
    saved = read_lora(folder / "fakerun.safetensors")
    request = GenerateRequest(prompt="sks square", width=16, height=16, steps=3, guidance_scale=1.0, seed=3, sampler="euler")
    raw_image = np.asarray(adapter.generate([request])[0])
    assert any(not torch.allclose(saved[key], value) for key, value in network.state_dict().items())
    with ema.swapped():
        assert all(torch.allclose(saved[key], value) for key, value in network.state_dict().items())
        ema_image = np.asarray(adapter.generate([request])[0])
    preview = np.asarray(Image.open(folder / "samples" / "000000004_00.png"))
    assert np.array_equal(preview, ema_image) and not np.array_equal(preview, raw_image)


def test_target_modules_apply_to_every_trained_component_and_ignore_if_contains_filters(tmp_path: Path) -> None:
    config = write_config(tmp_path, network={"target_modules": ["to_q", "to_out.0", "q_proj", "out_proj"],
                                             "ignore_if_contains": ["blocks.1."]},
                          train={"steps": 2, "train_text_encoder": True}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    state = read_lora(run_dir(tmp_path) / "fakerun.safetensors")
    layers = {key.removesuffix(".lora_B.weight") for key in state if key.endswith(".lora_B.weight")}
    assert layers == {"transformer.blocks.0.attn.to_q", "transformer.blocks.0.attn.to_out.0",
                      "text_encoder.self_attn.q_proj", "text_encoder.self_attn.out_proj"}
    assert all(state[f"{layer}.lora_B.weight"].abs().sum() > 0 for layer in layers)  # every one of them trained


def test_the_saved_header_carries_the_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, network={"linear": 4, "linear_alpha": 2, "conv": 2, "conv_alpha": 1},
                          train={"steps": 2}, save={"save_every": 1}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    headers = {}
    for name in ("fakerun_000000001", "fakerun"):
        with safe_open(str(run_dir(tmp_path) / f"{name}.safetensors"), "pt") as handle:
            headers[name] = handle.metadata()
    meta = headers["fakerun"]
    assert (meta["ss_sd_model_name"], meta["easel.arch"], meta["easel.network_type"]) == ("tiny:fake", "fake", "lora")
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2")
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1"}
    assert (meta["ss_steps"], headers["fakerun_000000001"]["ss_steps"]) == ("2", "1")
    assert meta["modelspec.trigger_phrase"] == "sks" and meta["modelspec.resolution"] == "64x64"
    assert meta["ss_num_train_images"] == "4"
    resolved = json.loads(meta["easel.config"])
    assert resolved["config"]["name"] == "fakerun" and resolved["config"]["process"][0]["network"]["linear_alpha"] == 2


def test_fp16_steps_go_through_the_loss_scaler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate makes a GradScaler only on GPUs; a CPU one stands in, so the trainer's scaler path runs here."""
    from toolkit.train import recipe

    sections = dict(train={"steps": 3, "dtype": "fp16", "optimizer": "sgd", "lr": 0.5, "max_grad_norm": 0}, **NO_SAMPLES)
    plain = write_config(tmp_path / "plain", **sections)
    assert run_main([str(plain)]) == 0
    scalers = []
    original = recipe.make_accelerator

    def with_scaler(config):  # noqa: ANN001, ANN202
        accelerator = original(config)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=1)
        scalers.append(accelerator.scaler)
        return accelerator

    monkeypatch.setattr(recipe, "make_accelerator", with_scaler)
    scaled = write_config(tmp_path / "scaled", **sections)
    assert run_main([str(scaled)]) == 0
    state = torch.load(run_dir(tmp_path / "scaled") / "fakerun_000000003.state.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0 ** 15  # grown after each of the 3 finite steps: the scaler stepped
    a = load_file(run_dir(tmp_path / "plain") / "fakerun.safetensors")
    b = load_file(run_dir(tmp_path / "scaled") / "fakerun.safetensors")
    assert all(torch.allclose(a[key].float(), b[key].float(), rtol=1e-2, atol=1e-4) for key in a)  # unscaled before the step
    assert any(a[key].abs().sum() > 0 for key in a if "lora_B" in key)


@pytest.mark.parametrize("skip_first", [False, True])
def test_preview_schedule(tmp_path: Path, skip_first: bool) -> None:
    config = write_config(tmp_path, train={"steps": 5, "skip_first_sample": skip_first}, sample={"sample_every": 2})
    assert run_main([str(config)]) == 0
    steps = sorted({int(p.name[:9]) for p in (run_dir(tmp_path) / "samples").glob("*_00.png")})
    assert steps == ([] if skip_first else [0]) + [2, 4, 5]  # before training, every sample_every steps, at the end
    assert (run_dir(tmp_path) / "samples" / "000000002_grid.png").is_file()
