"""Runs the fake trainer through run.py: a demo dataset, a config writer, and run.main with the fake registry."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COLOURS = [(200, 40, 40), (40, 180, 60), (50, 60, 210), (220, 200, 40)]


def make_dataset(folder: Path, count: int = 4) -> Path:
    """``count`` 16x16 images (a colour and a darker square) with captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        colour = COLOURS[index % len(COLOURS)]
        image = Image.new("RGB", (16, 16), colour)
        image.paste(tuple(c // 3 for c in colour), (4 + index, 4, 10 + index, 10))
        image.save(folder / f"img{index}.png")
        (folder / f"img{index}.txt").write_text(f"a square number {index}")
    return folder


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_config(tmp_path: Path, name: str = "fakerun", **sections: Any) -> Path:
    """A fake_trainer config in ``tmp_path``; keyword sections (train=..., network=...) are merged in."""
    data = tmp_path / "data"
    if not data.exists():
        make_dataset(data)
    process: dict[str, Any] = {
        "type": "fake_trainer", "training_folder": str(tmp_path / "output"), "device": "cpu", "trigger_word": "sks",
        "network": {"type": "lora", "linear": 4, "linear_alpha": 4},
        "save": {"dtype": "fp32", "save_every": 2, "max_step_saves_to_keep": 0},
        "datasets": [{"folder_path": str(data), "resolution": [64]}],
        "train": {"steps": 6, "batch_size": 2, "lr": 1e-2, "optimizer": "adamw", "seed": 7, "dtype": "fp32",
                  "gradient_checkpointing": True, "timestep_type": "sigmoid"},
        "model": {"name_or_path": "tiny:fake", "arch": "fake"},
        "sample": {"sample_every": 3, "prompts": ["[trigger] square", "plain square"], "width": 16, "height": 16,
                   "walk_seed": True, "seed": 3},
    }
    process = _merge(process, sections)
    process = {key: value for key, value in process.items() if value is not None}
    config = {"job": "extension", "config": {"name": name, "process": [process]}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def fake_registry() -> Any:
    import jobs
    from tests.train.fakes import FAKE_EXTENSION
    from toolkit.registry import Registry

    return Registry([jobs.EXTENSION, FAKE_EXTENSION])


def run_main(argv: list[str]) -> int:
    """``run.main(argv)`` with the fake registry; the process's signal handlers are restored afterwards."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import run
    from toolkit.registry import Registry

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    original = Registry.__dict__["discover"]
    Registry.discover = classmethod(lambda cls, *args, **kwargs: fake_registry())  # type: ignore[assignment]
    try:
        return run.main(argv)
    finally:
        Registry.discover = original  # type: ignore[assignment]
        for signum, handler in saved.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(run_main(sys.argv[1:]))
