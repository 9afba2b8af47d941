"""The issue's end-to-end proof: a LoRA trained by easel for a few steps on each tiny model, saved in the
architecture's default format, gives in diffusers (``pipeline.load_lora_weights``) the image easel's generate
job gives with it (same seed, steps, weight 1.0), within 1/255."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import run
from toolkit.output import dump_yaml
from tests.lora_io.helpers import load_lora
from toolkit.testing.demo import make

from tests.lora_io.conftest import ARCHS
from tests.lora_io.helpers import image, max_diff

PROMPT = "a painting of a cat, soft warm colors"
FORMATS = {"sd15": "kohya", "sdxl": "kohya", "zimage": "comfy"}


def _run(path: Path, body: dict) -> None:
    path.write_text(dump_yaml(body), encoding="utf-8")
    assert run.main([str(path)]) == 0


def _train(tmp_path: Path, arch: str) -> Path:
    make(tmp_path / "data", 4)
    _run(tmp_path / "train.yaml", {"job": "extension", "config": {"name": "trained", "process": [{
        "type": "lora_trainer", "training_folder": str(tmp_path / "output"), "device": "cpu",
        "network": {"type": "lora", "linear": 4, "linear_alpha": 4},
        "save": {"dtype": "fp32", "save_every": 1000},
        "datasets": [{"folder_path": str(tmp_path / "data"), "resolution": [64]}],
        "train": {"steps": 4, "batch_size": 2, "lr": 5e-2, "dtype": "fp32", "gradient_checkpointing": False, "seed": 3},
        "model": {"name_or_path": f"tiny:{arch}", "arch": arch},
    }]}})
    (path,) = sorted((tmp_path / "output").rglob("trained.safetensors"))
    return path


def _generate(tmp_path: Path, arch: str, lora: Path, sampler: str) -> np.ndarray:
    _run(tmp_path / "gen.yaml", {"job": "generate", "config": {"name": "gen", "process": [{
        "type": "to_folder", "output_folder": str(tmp_path / "gen"), "device": "cpu",
        "model": {"name_or_path": f"tiny:{arch}", "arch": arch},
        "generate": {"loras": [{"path": str(lora), "weight": 1.0}], "width": 64, "height": 64, "sample_steps": 2, "seed": 7, "guidance_scale": 1.0, "sampler": sampler,
                     "prompts": [PROMPT]},
    }]}})
    (path,) = sorted((tmp_path / "gen").glob("[0-9]*.png"))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


@pytest.mark.parametrize("arch", ARCHS)
def test_trained_lora_gives_the_generate_job_image_in_diffusers(arch, new_adapter, tmp_path):
    path = _train(tmp_path, arch)
    lora = load_lora(path)
    assert (lora.format, lora.arch) == (FORMATS[arch], arch)
    fresh = new_adapter(arch)
    sampler = fresh.arch.spec.default_sampler
    base = image(fresh, prompt=PROMPT, size=64)
    ours = _generate(tmp_path, arch, path, sampler)
    assert max_diff(ours, base) > 8, "a few steps at a high learning rate should change the image"
    fresh.pipeline().load_lora_weights(str(path))
    assert max_diff(image(fresh, prompt=PROMPT, size=64), ours) <= 1.0
