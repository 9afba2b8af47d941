"""bench/peers.py and bench/peer_runner.py on the CPU: easel's trainer timed beside a stand-in for diffusers' script.

diffusers' example trainers need torchvision, which does not import beside this machine's CPU torch, so a stand-in
script with the arguments peers.py passes (checked against the real scripts' argparse by hand, 2026-12-03) trains a
small layer; the easel side is the real trainer on the tiny SDXL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.test_bench import script

STAND_IN = '''
import argparse, time, torch
parser = argparse.ArgumentParser()
for flag in ("pretrained_model_name_or_path", "instance_data_dir", "instance_prompt", "output_dir", "resolution",
             "train_batch_size", "max_train_steps", "rank", "learning_rate", "mixed_precision", "checkpointing_steps",
             "seed", "max_grad_norm", "pretrained_vae_model_name_or_path"):
    parser.add_argument("--" + flag, required=True)
parser.add_argument("--gradient_checkpointing", action="store_true")
args = parser.parse_args()
layer = torch.nn.Linear(8, 8)
optimizer = torch.optim.AdamW(layer.parameters(), lr=float(args.learning_rate))
for _ in range(int(args.max_train_steps)):
    layer(torch.randn(4, 8)).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    time.sleep(0.02)  # a step of measurable length
'''


@pytest.mark.extended
def test_peers_times_both_trainers_and_records_easel_against_the_peer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkout = tmp_path / "diffusers"
    (checkout / "examples" / "dreambooth").mkdir(parents=True)
    (checkout / "examples" / "dreambooth" / "train_dreambooth_lora_sdxl.py").write_text(STAND_IN, encoding="utf-8")
    argv = ["--diffusers", str(checkout), "--only", "sdxl", "--tiny", "--resolution", "64", "--steps", "4", "--warmup", "1",
            "--images", "2", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    assert script("peers").main(argv) == 0
    output = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| sdxl")]
    assert [row[0].strip() for row in rows] == ["sdxl LoRA r16, diffusers trainer, adamw", "sdxl LoRA r16, easel trainer, adamw"]
    assert all(float(row[2]) > 0 and row[5].strip() == "" for row in rows)  # both ran to the end
    [path] = (tmp_path / "results").glob("*.json")
    theirs, ours = json.loads(path.read_text())["runs"][0]["records"]
    assert theirs["steps"] == ours["steps"] == 4 and "sdxl_64_s_per_step" not in theirs
    assert ours["sdxl_64_s_per_step"] == ours["s_per_step"] and ours["baseline"]["case"] == theirs["case"]
    assert ours["baseline"]["ratio"] == pytest.approx(ours["s_per_step"] / theirs["s_per_step"], rel=1e-3)
    easel_log = (tmp_path / "work" / "sdxl-easel.log").read_text()
    assert "lora on unet" in easel_log and "Done:" in easel_log


def test_the_runner_notes_each_optimizer_step_and_the_exit_code(tmp_path: Path) -> None:
    trainer = tmp_path / "train.py"
    trainer.write_text("import sys, torch\np = torch.nn.Parameter(torch.ones(2))\nopt = torch.optim.SGD([p], lr=0.1)\n"
                       "for _ in range(3):\n    p.sum().backward(); opt.step(); opt.zero_grad()\nsys.exit(3)\n")
    out = tmp_path / "steps.json"
    assert script("peer_runner").main([str(out), str(trainer)]) == 3
    found = json.loads(out.read_text())
    assert len(found["step_ends"]) == 3 and found["exit"] == 3 and found["peak_gib"] is None  # no GPU here
    assert found["step_ends"] == sorted(found["step_ends"])
