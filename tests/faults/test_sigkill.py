"""SIGKILL at random points, mid-step and mid-save: each restart resumes from the newest complete state, the
temp file a killed save leaves is removed, and the final LoRA equals an uninterrupted run's, bit for bit.

Before: a kill mid-save left a hidden ``.<name>.XXXX.tmp`` beside the saves that no run ever removed.
The kill points are drawn from a seed printed on failure (``EASEL_KILL_SEED`` repeats a draw).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.train.harness import ROOT, run_main, write_config
from toolkit.output import TEMP_PATTERN
from toolkit.train.logs import read_losses

pytestmark = pytest.mark.slow
SECTIONS = dict(train={"steps": 12, "batch_size": 2, "gradient_accumulation": 2, "lr_scheduler": "cosine"},
                save={"save_every": 1, "max_step_saves_to_keep": 3}, sample={"sample_every": 4})


def killed_run(config: Path, **env: str) -> tuple[int, str]:
    process = subprocess.run([sys.executable, str(ROOT / "tests/faults/killer.py"), str(config)], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
    return process.returncode, process.stderr


def temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if TEMP_PATTERN.fullmatch(path.name)]


def test_kills_mid_step_and_mid_save_then_resume_to_the_uninterrupted_lora(tmp_path: Path) -> None:
    seed = int(os.environ.get("EASEL_KILL_SEED", random.randrange(10 ** 6)))
    rng = random.Random(seed)
    straight = write_config(tmp_path / "straight", **SECTIONS)
    assert run_main([str(straight)]) == 0
    config = write_config(tmp_path / "killed", **SECTIONS)
    folder = tmp_path / "killed" / "output" / "fakerun"
    kills = [{"EASEL_FAKE_SIGNAL_AT": f"{rng.randint(2, 8)}:{int(signal.SIGKILL)}"},  # two predict calls per step
             {"EASEL_KILL_AT_STATE_SAVE": str(rng.randint(1, 3))},
             {"EASEL_FAKE_SIGNAL_AT": f"{rng.randint(2, 8)}:{int(signal.SIGKILL)}"}]
    for kill in kills:
        code, error = killed_run(config, **kill)
        assert code == -signal.SIGKILL, (seed, kill, error[-2000:])
        if "EASEL_KILL_AT_STATE_SAVE" in kill:
            assert temp_files(folder), (seed, "a kill before the rename leaves its temp file")
    code, error = killed_run(config)
    assert code == 0, (seed, error[-2000:])
    assert "Resuming from" in error and not temp_files(folder), seed
    expected = load_file(tmp_path / "straight" / "output" / "fakerun" / "fakerun.safetensors")
    final = load_file(folder / "fakerun.safetensors")
    assert final.keys() == expected.keys() and all(final[key].equal(expected[key]) for key in expected), seed
    rows = [(r["step"], r["loss"], r["lr"]) for r in read_losses(folder / "loss.csv")]
    assert rows == [(r["step"], r["loss"], r["lr"]) for r in read_losses(tmp_path / "straight" / "output" / "fakerun" / "loss.csv")]
