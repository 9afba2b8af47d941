"""Seed 000's recipe end to end: the example generate config writes images with prompt files into a
dataset folder, and the example training config trains on that folder (both pointed at the tiny
Z-Image model and shrunk with --set, nothing else changed)."""

from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "config" / "examples"
pytestmark = pytest.mark.slow


def test_generate_then_train_on_what_was_generated(tmp_path: Path, run_main) -> None:
    folder = tmp_path / "synthetic_watercolor"
    assert run_main(EXAMPLES / "synthetic_generate.yaml",
                    "--set", f"config.process.0.output_folder={folder}", "--set", "config.process.0.device=cpu",
                    "--set", "config.process.0.model.name_or_path=tiny:zimage", "--set", "config.process.0.model.dtype=fp32",
                    "--set", "config.process.0.generate.width=64", "--set", "config.process.0.generate.height=64",
                    "--set", "config.process.0.generate.images_per_prompt=1") == 0
    images = sorted(folder.glob("*.png"))
    assert len(images) == 10 and all(p.with_suffix(".txt").is_file() for p in images)
    assert "watercolor" in images[0].with_suffix(".txt").read_text()

    overrides = {"training_folder": tmp_path / "output", "device": "cpu", "datasets.0.folder_path": folder,
                 "datasets.0.resolution": "[64]", "datasets.0.cache_latents_to_disk": "false", "train.steps": 3,
                 "train.optimizer": "adamw", "train.dtype": "fp32", "train.cache_text_embeddings": "false",
                 "train.unload_text_encoder": "false", "model.name_or_path": "tiny:zimage", "model.quantize": "false",
                 "model.low_vram": "false", "model.assistant_lora_path": "null", "sample.width": 32, "sample.height": 32}
    argv = [arg for key, value in overrides.items() for arg in ("--set", f"config.process.0.{key}={value}")]
    assert run_main(EXAMPLES / "z_image_turbo_lora.yaml", *argv) == 0
    run = tmp_path / "output" / "zimage_spring_watercolor_style"
    assert (run / "zimage_spring_watercolor_style.safetensors").is_file()
    assert len((run / "loss.csv").read_text().splitlines()) == 4
