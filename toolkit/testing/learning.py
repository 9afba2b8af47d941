"""A learning check for any architecture's tiny model: train a LoRA on the warm demo palette through run.py, then
the loss must fall and the saved LoRA must move samples towards the palette (used by the architectures' tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def learns(main: Callable[[list[str]], int], arch: str, targets: list[str], tmp_path: Path, registry: Any, steps: int = 120,
           lr: float = 5e-3) -> None:
    """Train ``tiny:<arch>`` on the warm demo palette through ``main`` (run.py's): the loss falls and the saved LoRA
    moves samples towards the palette (mean colour distance at least halved). ``targets``: a random model needs its
    input, modulation and output layers adapted too."""
    import csv
    import json

    import numpy as np

    from toolkit.config.blocks import ModelConfig
    from toolkit.lora_io import apply_loras, remove_loras
    from toolkit.models.base import GenerateRequest
    from toolkit.models.loading import load_adapter
    from toolkit.testing.demo import make

    make(tmp_path / "demo", 8)
    process = {"type": "lora_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu", "trigger_word": "warmstyle",
               "network": {"type": "lora", "linear": 8, "linear_alpha": 8, "target_modules": targets},
               "save": {"dtype": "fp32", "save_every": steps},
               "datasets": [{"folder_path": str(tmp_path / "demo"), "resolution": [64], "cache_latents": True}],
               "train": {"batch_size": 2, "steps": steps, "lr": lr, "lr_scheduler": "cosine", "dtype": "fp32",
                         "gradient_checkpointing": False, "timestep_type": "sigmoid", "cache_text_embeddings": True},
               "model": {"name_or_path": f"tiny:{arch}", "arch": arch}}
    config = tmp_path / "learn.json"
    config.write_text(json.dumps({"job": "extension", "config": {"name": "learn", "process": [process]}}))
    assert main([str(config)]) == 0
    losses = [float(row["loss"]) for row in csv.DictReader((tmp_path / "out" / "learn" / "loss.csv").open())]
    assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20]), (np.mean(losses[:20]), np.mean(losses[-20:]))

    def colour(images: list) -> Any:
        return np.mean([np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0) for image in images], axis=0)

    from PIL import Image

    target = colour([Image.open(p).convert("RGB") for p in sorted((tmp_path / "demo").glob("*.png"))])
    adapter = load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch), registry, device="cpu")
    requests = [GenerateRequest(prompt=f"warmstyle a painting of a {s}", width=64, height=64, steps=8,
                                guidance_scale=adapter.arch.defaults.get("guidance_scale", 1.0), seed=10 + i, sampler="flowmatch")
                for i, s in enumerate(["house", "boat", "tree"])]
    base = adapter.generate(requests)
    apply_loras(adapter, [(tmp_path / "out" / "learn" / "learn.safetensors", 1.0)])
    styled = adapter.generate(requests)
    remove_loras(adapter)
    before, after = (np.linalg.norm(colour(images) - target) for images in (base, styled))
    assert after <= 0.5 * before, (before, after)
