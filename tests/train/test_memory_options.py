"""The low-VRAM options through run.py with the tiny models: each trains (a few steps) and says what it did."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

import run
from toolkit.models import memory
from toolkit.train.logs import read_losses


def dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, colour in enumerate([(200, 60, 40), (40, 160, 80), (60, 70, 210), (220, 200, 50)]):
        image = Image.new("RGB", (64, 64), colour)
        image.paste((255, 255, 255), (8 + 4 * index, 16, 40, 48))
        image.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"a square number {index}")
    return folder


def config(tmp_path: Path, name: str, arch: str, *, model: dict[str, Any], train: dict[str, Any],
           network: dict[str, Any] | None = None, sample: bool = False) -> Path:
    process: dict[str, Any] = {
        "type": "lora_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu", "trigger_word": "sks",
        "network": network or {"type": "lora", "linear": 4, "linear_alpha": 4},
        "save": {"dtype": "fp32"},
        "datasets": [{"folder_path": str(dataset(tmp_path / "data")), "resolution": [64], "cache_latents": True}],
        "train": {"steps": 4, "batch_size": 2, "lr": 1e-2, "seed": 3, "dtype": "fp32", "disable_sampling": not sample, **train},
        "model": {"name_or_path": f"tiny:{arch.partition(':')[0]}", "arch": arch, **model},
    }
    if sample:
        process["sample"] = {"sample_every": 100, "prompts": ["sks square"], "width": 32, "height": 32, "sample_steps": 2}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"job": "extension", "config": {"name": name, "process": [process]}}))
    return path


def trained(tmp_path: Path, name: str) -> tuple[dict[str, torch.Tensor], str, list[float]]:
    """The saved LoRA, the run's log and its losses."""
    from safetensors.torch import load_file

    folder = tmp_path / "out" / name
    losses = [row["loss"] for row in read_losses(folder / "loss.csv")]
    return load_file(str(folder / f"{name}.safetensors")), (folder / "log.txt").read_text(), losses


def assert_learned(lora: dict[str, torch.Tensor], losses: list[float]) -> None:
    ups = [value for key, value in lora.items() if "lora_up" in key or "lora_B" in key]
    assert ups and all(value.abs().sum() > 0 for value in ups)  # B starts at zero: every layer was updated
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)


def test_zimage_quantized_low_vram_offloaded_with_caches(tmp_path: Path) -> None:
    path = config(tmp_path, "zlow", "zimage:turbo", sample=True,
                  model={"quantize": True, "qtype": "qint8", "low_vram": True, "layer_offloading": True,
                         "layer_offloading_fraction": 0.5},
                  train={"gradient_checkpointing": True, "gradient_checkpointing_interval": 2, "cache_text_embeddings": True,
                         "unload_text_encoder": True, "optimizer": "adamw8bit"})
    assert run.main([str(path)]) == 0
    lora, log, losses = trained(tmp_path, "zlow")
    assert_learned(lora, losses)
    assert "transformer: 28 linear layers quantized to qint8 (9 kept in full precision)" in log
    assert "text_encoder, vae moved to the CPU for training" in log
    assert "layer offloading: 2 of 4 transformer blocks stay in CPU memory" in log
    assert "gradient checkpointing: one transformer block in 2 (and every offloaded one)" in log
    assert len(list((tmp_path / "out" / "zlow" / "samples").glob("*.png"))) == 2  # before and after training


def test_sd15_torchao_int8_with_quantized_text_encoder(tmp_path: Path) -> None:
    path = config(tmp_path, "sdint8", "sd15", model={"quantize": True, "qtype": "int8", "quantize_te": True, "qtype_te": "qint8"},
                  train={"gradient_checkpointing": True})
    assert run.main([str(path)]) == 0
    lora, log, losses = trained(tmp_path, "sdint8")
    assert_learned(lora, losses)
    assert "unet: 160 linear layers quantized to int8 (24 kept in full precision)" in log
    assert "text_encoder: 12 linear layers quantized to qint8" in log
    assert "INFO vae moved to the CPU for training" in log  # the text encoder stays: its embeddings are not cached


def test_zimage_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")  # Dynamo's tracing, without code generation (fast)
    torch._dynamo.reset()
    path = config(tmp_path, "zcompiled", "zimage", model={}, train={"gradient_checkpointing": True, "compile": True})
    try:
        assert run.main([str(path)]) == 0
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    finally:
        torch._dynamo.reset()
    lora, log, losses = trained(tmp_path, "zcompiled")
    assert_learned(lora, losses)
    assert "torch.compile: 4 transformer blocks" in log


def test_sdxl_nf4_lokr_in_bf16(tmp_path: Path) -> None:
    path = config(tmp_path, "xlnf4", "sdxl", model={"quantize": True, "qtype": "nf4", "low_vram": True},
                  train={"gradient_checkpointing": False, "dtype": "bf16"},  # bf16 weights and accelerate's autocast
                  network={"type": "lokr", "linear": 4, "linear_alpha": 4})
    assert run.main([str(path)]) == 0
    lora, log, losses = trained(tmp_path, "xlnf4")
    assert lora and all(math.isfinite(float(value.float().abs().sum())) for value in lora.values())
    assert len(losses) == 4 and "linear layers quantized to nf4" in log


def test_dry_run_names_the_memory_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, "plan", "zimage", model={"quantize": True, "qtype": "int8", "low_vram": True,
                                                     "layer_offloading": True, "layer_offloading_fraction": 0.25},
                  train={})
    assert run.main(["--dry-run", str(path)]) == 0
    assert ("  memory: denoiser quantized to int8, low_vram (block-by-block loading, denoiser placed on first use), "
            "0.25 of the denoiser blocks streamed from CPU memory") in capsys.readouterr().out


def test_adam_uses_the_fused_kernel_where_it_can() -> None:
    from toolkit.train.optimizers import build_optimizer

    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert build_optimizer("adamw", [{"params": cpu}], 1e-3, {}).defaults["fused"] is True
    assert not build_optimizer("adamw", [{"params": cpu}], 1e-3, {"foreach": True}).defaults.get("fused")
    mixed = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3, device="meta"))]
    assert not build_optimizer("adam", [{"params": mixed}], 1e-3, {}).defaults.get("fused")
    assert not build_optimizer("sgd", [{"params": cpu}], 1e-3, {}).defaults.get("fused")


def test_interval_checkpointing_picks_every_nth_block_and_keeps_the_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.checkpoint

    from toolkit.train.checkpointing import IntervalCheckpointing

    blocks = [torch.nn.Linear(8, 8) for _ in range(5)]
    checkpointed: list[torch.nn.Module] = []
    original = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        checkpointed.append(function.__self__)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    function = IntervalCheckpointing(2)
    function.always.add(blocks[3])

    def loss(run) -> torch.Tensor:  # noqa: ANN001
        h = torch.ones(2, 8)
        for block in blocks:
            h = torch.tanh(run(block, h))
        return h.square().sum()

    for _ in range(2):  # the same blocks in every step
        checkpointed.clear()
        for block in blocks:
            block.weight.grad = None
        loss(function).backward()
        assert checkpointed == [blocks[0], blocks[2], blocks[3], blocks[4]]
    grads = [block.weight.grad.clone() for block in blocks]
    for block in blocks:
        block.weight.grad = None
    loss(lambda block, h: block(h)).backward()
    assert all(torch.equal(block.weight.grad, grad) for block, grad in zip(blocks, grads))


def test_zimage_with_every_second_block_checkpointed(tmp_path: Path) -> None:
    files = {}
    for interval in (1, 2):
        name = f"interval{interval}"
        path = config(tmp_path, name, "zimage", model={}, train={"gradient_checkpointing_interval": interval})
        assert run.main([str(path)]) == 0
        files[interval], log, losses = trained(tmp_path, name)
        assert ("gradient checkpointing: one transformer block in 2" in log) == (interval == 2)
    assert_learned(files[2], losses)
    assert all(torch.equal(files[1][key], files[2][key]) for key in files[1])  # checkpointing recomputes exactly


def test_checkpointing_interval_needs_checkpointing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, "nockpt", "zimage", model={}, train={"gradient_checkpointing": False, "gradient_checkpointing_interval": 2})
    assert run.main([str(path)]) == 2
    assert "train.gradient_checkpointing_interval: needs train.gradient_checkpointing: true" in capsys.readouterr().err


def test_compile_mode_needs_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, "nocompile", "zimage", model={}, train={"compile_mode": "reduce-overhead"})
    assert run.main([str(path)]) == 2
    assert "train.compile_mode: needs train.compile: true; set it, or remove compile_mode" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_the_denoiser_trains_in_train_mode_so_adapter_dropout_is_on(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded models are in eval mode, which turns the adapter's dropout off; training steps (before and after a
    preview) must see the denoiser in train mode, previews in eval mode."""
    from extensions.sd15.adapter import SD15Adapter

    modes: list[bool] = []
    predict, generate = SD15Adapter.predict, SD15Adapter.generate
    monkeypatch.setattr(SD15Adapter, "predict", lambda self, *a, **k: (modes.append(self.denoiser.training), predict(self, *a, **k))[1])
    monkeypatch.setattr(SD15Adapter, "generate", lambda self, *a, **k: (modes.append(self.denoiser.training), generate(self, *a, **k))[1])
    path = config(tmp_path, "modes", "sd15", sample=True, model={}, train={"steps": 2},
                  network={"type": kind, "linear": 4, "linear_alpha": 4, "dropout": 0.5})
    assert run.main([str(path)]) == 0
    assert modes == [False, True, True, False]  # preview, two steps, preview
