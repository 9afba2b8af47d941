"""The trainer learns: on the tiny Z-Image model and the one-palette demo set, the LoRA's samples move
towards the dataset's colours (mean colour distance at least halved) and the loss falls.

It runs the quickstart config through run.py, then checks the saved file a second way: loaded into a
fresh model with toolkit.lora_io and sampled with the generate code, it gives the same improvement.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import run
from tests.conftest import ROOT
from toolkit.config.blocks import ModelConfig
from toolkit.lora_io import apply_loras, remove_loras
from toolkit.models.base import GenerateRequest
from toolkit.models.loading import load_adapter
from toolkit.testing.demo import make

pytestmark = pytest.mark.slow
PROMPTS = ["warmstyle a painting of a house", "warmstyle a painting of a boat", "warmstyle a painting of a tree",
           "warmstyle a painting of a cat"]


def mean_colour(images: list) -> np.ndarray:
    return np.mean([np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0) for image in images], axis=0)


def previews(folder: Path, step: int) -> list:
    from PIL import Image

    return [Image.open(path) for path in sorted(folder.glob(f"{step:09d}_*.png"))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learning")
    make(root / "demo", 16)
    code = run.main([str(ROOT / "config/examples/quickstart.yaml"),
                     "--set", f"config.process.0.training_folder={root / 'output'}",
                     "--set", f"config.process.0.datasets.0.folder_path={root / 'demo'}",
                     "--set", "config.process.0.train.steps=250",
                     "--set", "config.process.0.sample.sample_every=1000"])
    assert code == 0
    return root


def test_samples_move_to_the_dataset_palette_and_loss_falls(trained: Path) -> None:
    from PIL import Image

    run_dir = trained / "output" / "quickstart"
    target = mean_colour([Image.open(p) for p in sorted((trained / "demo").glob("*.png"))])
    before = np.linalg.norm(mean_colour(previews(run_dir / "samples", 0)) - target)
    after = np.linalg.norm(mean_colour(previews(run_dir / "samples", 250)) - target)
    assert after <= 0.5 * before, (before, after)
    losses = [float(row["loss"]) for row in csv.DictReader((run_dir / "loss.csv").open())]
    assert len(losses) == 250 and np.mean(losses[-25:]) < 0.7 * np.mean(losses[:25])


def test_the_saved_file_gives_the_same_result_through_the_generate_code(trained: Path, registry) -> None:
    from PIL import Image

    target = mean_colour([Image.open(p) for p in sorted((trained / "demo").glob("*.png"))])
    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), registry, device="cpu")
    requests = [GenerateRequest(prompt=p, width=64, height=64, steps=8, guidance_scale=1.0, seed=100 + i, sampler="flowmatch")
                for i, p in enumerate(PROMPTS)]
    with torch.no_grad():
        base = adapter.generate(requests)
        apply_loras(adapter, [(trained / "output" / "quickstart" / "quickstart.safetensors", 1.0)])
        styled = adapter.generate(requests)
        remove_loras(adapter)
    before, after = (np.linalg.norm(mean_colour(images) - target) for images in (base, styled))
    assert after <= 0.5 * before, (before, after)
