"""``train.distributed: fsdp`` with two processes (torchrun, gloo on the CPU) on the tiny Z-Image: the frozen
transformer sharded across them trains exactly as data parallelism does, resumes exactly, and saves the LoRA whole.

The sharded run is compared with a data-parallel run of the same config (same data shares, same noise per process):
sharding only changes where the frozen weights live between uses, so the losses and the saved LoRA are equal (the
tolerance, 1e-6, is float rounding; they come out bitwise equal here). A one-process run draws its own noise, so its
losses are compared in the mean (within 10%) and its LoRA by keys and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import run
from tests.train.test_real_runs import finish, free_port, rows, start
from toolkit.testing.demo import make



def config(folder: Path, name: str, distributed: str, steps: int) -> Path:
    """4 images of 64 px per process and step, cached latents and text, checkpointing, a preview, constant lr."""
    process = {
        "type": "lora_trainer", "training_folder": str(folder / "output"), "device": "cpu", "trigger_word": "warmstyle",
        "network": {"type": "lora", "linear": 4, "linear_alpha": 4}, "save": {"dtype": "fp32", "save_every": 2},
        "datasets": [{"folder_path": str(folder / "demo"), "resolution": [64], "cache_latents_to_disk": True}],
        "train": {"steps": steps, "batch_size": 2, "lr": 5e-3, "seed": 3, "dtype": "fp32", "distributed": distributed,
                  "gradient_checkpointing": True, "cache_text_embeddings": True},
        "model": {"name_or_path": "tiny:zimage", "arch": "zimage"},
        "sample": {"sample_every": 100, "prompts": ["warmstyle a house"], "width": 32, "height": 32, "sample_steps": 2},
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"job": "extension", "config": {"name": name, "process": [process]}}))
    return path


def torchrun(*paths: Path) -> str:
    """``torchrun --nproc_per_node 2 run.py PATH ...`` (the configs one after the other in one launch)."""
    code, output = finish(start("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                                "run.py", *map(str, paths)))
    assert code == 0, output
    return output


def losses(folder: Path, name: str) -> list[float]:
    return [float(loss) for _, loss, _ in rows(folder / "output" / name / "loss.csv")]


@pytest.mark.slow
def test_sharded_training_equals_data_parallel_resumes_exactly_and_saves_the_lora_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "demo", 8)
    # An empty model cache: the tiny model is built during the launch, by rank 0 alone while rank 1 waits
    # (transformers writes checkpoint files on rank 0 only).
    monkeypatch.setenv("EASEL_CACHE_DIR", str(tmp_path / "cache"))
    first = torchrun(config(tmp_path, "ddp", "ddp", 4), config(tmp_path, "fsdp", "fsdp", 2))
    assert first.count("Built the tiny 'zimage' model") == 1
    assert "the transformer is sharded across 2 processes (4 blocks" in first
    assert "step 0: 1 previews" in first  # made by both processes (one alone would wait forever for the other's shards)
    resumed = torchrun(config(tmp_path, "fsdp", "fsdp", 4))
    assert "Resuming from fsdp_000000002.state.pt at step 2" in resumed
    assert "All 2 processes hold identical adapter weights" in resumed

    sharded, replicated = losses(tmp_path, "fsdp"), losses(tmp_path, "ddp")
    assert len(sharded) == 4 and torch.allclose(torch.tensor(sharded), torch.tensor(replicated), rtol=1e-6, atol=0)
    lora = load_file(str(tmp_path / "output" / "fsdp" / "fsdp.safetensors"))
    reference = load_file(str(tmp_path / "output" / "ddp" / "ddp.safetensors"))
    assert lora.keys() == reference.keys() and all(torch.allclose(lora[k], reference[k], rtol=1e-6, atol=1e-7) for k in lora)
    assert sorted((tmp_path / "output" / "fsdp" / "samples").glob("*.png"))

    assert run.main([str(config(tmp_path, "single", "fsdp", 4))]) == 0
    alone = load_file(str(tmp_path / "output" / "single" / "single.safetensors"))
    assert {k: v.shape for k, v in alone.items()} == {k: v.shape for k, v in lora.items()}
    assert abs(sum(losses(tmp_path, "single")) / sum(sharded) - 1) < 0.1


@pytest.mark.parametrize("option", ["quantize", "layer_offloading"])
def test_options_that_cannot_be_sharded_are_refused_at_their_line(option: str, registry, tmp_path: Path) -> None:
    from toolkit.config.job import load_job_config
    from toolkit.errors import ConfigError

    make(tmp_path / "demo", 1)
    path = config(tmp_path, "refused", "fsdp", 2)
    data = json.loads(path.read_text())
    data["config"]["process"][0]["model"][option] = True
    path.write_text(json.dumps(data, indent=1))
    with pytest.raises(ConfigError, match=rf"model.{option}.*train.distributed: fsdp"):
        load_job_config(path, registry)


def test_an_fsdp_accelerate_config_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry) -> None:
    """accelerate's own FSDP would wrap only the small adapter step; easel says how to shard the base instead."""
    from toolkit.config.job import load_job_config
    from toolkit.errors import EaselError
    from toolkit.train.recipe import make_accelerator

    make(tmp_path / "demo", 1)
    process = load_job_config(config(tmp_path, "accel", "ddp", 2), registry).processes[0]
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(EaselError, match="train.distributed: fsdp"):
        make_accelerator(process)
