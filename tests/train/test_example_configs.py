"""The training examples carry the values of the projects they reproduce (seeds 000, 002, 003, 004) and say how to run them.

Where a seed trained with diffusers' example scripts, the values it left at the script's defaults count
too: rank 4 with alpha 4 on the UNet attention (``to_q/to_k/to_v/to_out.0``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ROOT
from toolkit.config.job import load_job_config

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]

EXPECTED: dict[str, dict[str, Any]] = {
    "z_image_turbo_lora.yaml": {
        "trigger_word": "<springwc>", "model.name_or_path": "Tongyi-MAI/Z-Image-Turbo", "model.arch": "zimage:turbo",
        "model.low_vram": True, "model.assistant_lora_path": "ostris/zimage_turbo_training_adapter/zimage_turbo_training_adapter_v2.safetensors",
        "network.type": "lora", "network.linear": 16, "network.linear_alpha": 16, "network.conv": 8, "network.conv_alpha": 8,
        "datasets.0.resolution": [512], "train.steps": 3000, "train.lr": 1e-4, "train.optimizer": "adamw8bit",
        "train.dtype": "bf16", "train.content_or_style": "style", "train.train_unet": True, "train.train_text_encoder": False,
        "sample.sample_every": 200, "sample.sampler": "flowmatch", "sample.sample_steps": 8, "sample.guidance_scale": 1.0,
    },
    "sdxl_dreambooth_lora.yaml": {
        "trigger_word": "HANA_TOFU", "model.name_or_path": "stabilityai/stable-diffusion-xl-base-1.0", "model.arch": "sdxl",
        "model.vae_path": "madebyollin/sdxl-vae-fp16-fix", "network.linear": 4, "network.linear_alpha": 4,
        "network.target_modules": ATTENTION, "datasets.0.resolution": [1024], "datasets.0.flip_x": False,
        "train.batch_size": 1, "train.gradient_accumulation": 1, "train.gradient_checkpointing": True,
        "train.steps": 500, "train.lr": 1e-4, "train.lr_scheduler": "constant", "train.lr_warmup_steps": 0,
        "train.min_snr_gamma": 5.0, "train.optimizer": "adamw8bit", "train.dtype": "fp16", "train.seed": 0,
        "train.train_text_encoder": False,
    },
    "sd15_style_lora.yaml": {
        "trigger_word": "wcstyle", "model.arch": "sd15", "network.linear": 32, "network.linear_alpha": 16,
        "network.target_modules": [*ATTENTION, "q_proj", "k_proj", "v_proj", "out_proj"], "train.train_unet": True,
        "train.train_text_encoder": True, "datasets.0.resolution": [512], "train.epochs": 20, "train.steps": None,
        "train.batch_size": 2, "train.optimizer": "adamw", "train.lr": 1e-4, "train.lr_scheduler": "cosine", "train.dtype": "bf16",
    },
    "anything_v5_style_lora.yaml": {
        "trigger_word": "drawn by KSH drawing style", "model.arch": "sd15", "network.linear": 4, "network.linear_alpha": 4,
        "network.target_modules": ATTENTION, "datasets.0.resolution": [512], "datasets.0.flip_x": True,
        "train.batch_size": 1, "train.epochs": 50, "train.steps": None, "train.lr": 1e-4, "train.lr_scheduler": "cosine",
        "train.lr_warmup_steps": 0, "train.seed": 5508, "save.save_every": 10000,
    },
}


def value_at(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[int(part)] if part.isdigit() else getattr(config, part)
    return config


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_has_the_seed_values(name: str, registry) -> None:
    loaded = load_job_config(ROOT / "config" / "examples" / name, registry)
    (process,) = loaded.processes
    wrong = {key: (value_at(process, key), want) for key, want in EXPECTED[name].items() if value_at(process, key) != want}
    assert not wrong, f"{name}: (config, seed) differ: {wrong}"


@pytest.mark.parametrize("name", ["quickstart.yaml", *sorted(EXPECTED)])
def test_example_opens_with_its_exact_command(name: str) -> None:
    assert (ROOT / "config" / "examples" / name).read_text().splitlines()[0] == f"# python run.py config/examples/{name}"


def test_single_file_example_points_at_a_checkpoint_file(registry) -> None:
    (process,) = load_job_config(ROOT / "config" / "examples" / "anything_v5_style_lora.yaml", registry).processes
    assert process.model.name_or_path.endswith(".safetensors")
