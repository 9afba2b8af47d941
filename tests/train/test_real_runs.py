"""Training runs of the real tiny Z-Image model in separate processes, as a user starts them.

- Exact resume: a run stopped by SIGTERM wherever it happens to be, then started again, writes the
  same per-step losses and the same LoRA as a run that was never stopped.
- Data parallel: ``torchrun --nproc_per_node 2 run.py CONFIG`` (gloo on CPU) trains, every process
  ends with the same adapter weights, and only rank 0 writes files.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT
from toolkit.testing.demo import make

STEPS = 40
pytestmark = pytest.mark.slow


def write_config(folder: Path, name: str, steps: int = STEPS, cache: str = "cache_latents") -> Path:
    """The quickstart's shape, small: random caption dropout and flips, accumulation, previews between steps."""
    config = folder / f"{name}.yaml"
    config.write_text(f"""
job: extension
config:
  name: {name}
  process:
    - type: lora_trainer
      training_folder: {folder / 'output'}
      device: cpu
      trigger_word: warmstyle
      network: {{type: lora, linear: 4, linear_alpha: 4}}
      save: {{dtype: fp32, save_every: 10, max_step_saves_to_keep: 2}}
      datasets:
        - folder_path: {folder / 'demo'}
          resolution: [64]
          caption_dropout_rate: 0.3
          flip_x: true
          {cache}: true
      train:
        batch_size: 2
        steps: {steps}
        gradient_accumulation: 2
        lr: 2e-3
        lr_scheduler: cosine
        lr_warmup_steps: 4
        dtype: fp32
        gradient_checkpointing: false
      model: {{name_or_path: "tiny:zimage", arch: "zimage:turbo"}}
      sample:
        sample_every: 15
        width: 32
        height: 32
        sample_steps: 2
        prompts: ["warmstyle a painting of a house"]
""")
    return config


def start(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def rows(path: Path) -> list[tuple[str, str, str]]:
    """(step, loss, lr) of loss.csv; the seconds column differs between runs."""
    return [tuple(line.split(",")[:3]) for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("real_runs")
    make(folder / "demo", 8)
    code, output = finish(start("-c", "import sys; sys.path.insert(0, '.'); from toolkit.models.tiny import tiny_folder; "
                                      "from extensions.z_image.tiny import build; tiny_folder('zimage', build)"))
    assert code == 0, output  # the tiny model is built once, before processes race for it
    return folder


def test_a_stopped_run_resumes_exactly(workspace: Path) -> None:
    straight = write_config(workspace, "straight")
    code, output = finish(start("run.py", str(straight)))
    assert code == 0, output

    resumed = write_config(workspace, "resumed")
    losses = workspace / "output" / "resumed" / "loss.csv"
    process = start("run.py", str(resumed))
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not (losses.is_file() and len(losses.read_text().splitlines()) > 3):
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)
    assert code == 143, output
    assert "To continue, run the same command again" in output
    stopped_at = len(rows(losses))
    assert 3 <= stopped_at < STEPS, output

    code, output = finish(start("run.py", str(resumed)))
    assert code == 0, output
    assert f"Resuming from resumed_{stopped_at:09d}.state.pt at step {stopped_at}" in output
    assert rows(losses) == rows(workspace / "output" / "straight" / "loss.csv")
    a = load_file(str(workspace / "output" / "straight" / "straight.safetensors"))
    b = load_file(str(workspace / "output" / "resumed" / "resumed.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def free_port() -> int:
    """A TCP port nobody listens on now (a fixed one collides with parallel test runs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_data_parallel_and_only_rank_0_writes(workspace: Path) -> None:
    config = write_config(workspace, "ddp", steps=6, cache="cache_latents_to_disk")  # ranks share the encoding
    code, output = finish(start("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                                "run.py", str(config)))
    assert code == 0, output
    assert "All 2 processes hold identical adapter weights" in output
    assert "Training ddp: 6 steps on 2 x cpu" in output
    folder = workspace / "output" / "ddp"
    assert len(rows(folder / "loss.csv")) == 6
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["ddp.safetensors"]
    assert output.count("Done: ") == 1  # one process reports, one writes
