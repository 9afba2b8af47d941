"""The README's offline tour: every line of its command block, run as written from a fresh folder.

The folder looks like the repository root to the commands (``config/`` and ``toolkit/`` linked, a copy of
``datasets/make_demo.py``), so relative paths (``datasets/``, ``output/``) land in it. ``python run.py ...`` lines
run through run.py's main() in this process (the same argv; it saves one interpreter start per line).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import run
from tests.conftest import ROOT
from toolkit.sampling.grid import read_grid_metadata

pytestmark = pytest.mark.slow


def tour_commands() -> list[str]:
    """The lines of the code block under the README's "An offline tour" heading, comments removed."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## An offline tour\n.*?^```\n(.*?)^```", readme, re.M | re.S)
    assert block, "README.md has no offline tour"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_the_tour_names_every_tour_config() -> None:
    listed = {shlex.split(line)[2] for line in tour_commands()}
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "config" / "examples" / "tour").glob("*.yaml")}
    assert shipped <= listed and "config/examples/quickstart.yaml" in listed


def test_every_tour_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("config", "toolkit"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "datasets").mkdir()
    shutil.copy(ROOT / "datasets" / "make_demo.py", tmp_path / "datasets")
    monkeypatch.chdir(tmp_path)
    made = subprocess.run([sys.executable, "datasets/make_demo.py"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and (tmp_path / "datasets" / "demo").is_dir(), made.stderr
    for line in tour_commands():
        python, script, *args = shlex.split(line)
        assert (python, script) == ("python", "run.py"), line
        assert run.main(args) == 0, line

    out, tour = tmp_path / "output", tmp_path / "datasets" / "tour"
    assert len(list(tour.glob("*.png"))) == len(list(tour.glob("*.txt"))) == len(list(tour.glob("*.blip2"))) == 10
    assert all(p.read_text(encoding="utf-8").startswith("tourstyle, ") for p in tour.glob("*.txt"))
    assert len((tmp_path / "datasets" / "tour_jsonl" / "metadata.jsonl").read_text().splitlines()) == 10
    for name in ("quickstart", "tour_blip", "tour_blip2", "tour_sdxl"):
        assert (out / name / f"{name}.safetensors").is_file(), name
    assert len(list((out / "tour_generate" / "sd15").glob("0*.png"))) == 3
    labels = read_grid_metadata(out / "tour_generate" / "sd15" / "grid_00000.png")["labels"]
    assert labels[0] == "42: tourstyle, a painting of a house <lora:tour_blip:0.6> <lora:tour_blip2:0.4>"
    assert len(list((out / "tour_generate" / "zimage_img2img").glob("0*.png"))) == 1
    results = json.loads((out / "tour_eval" / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["base", "blip", "blip2", "blip_blip2_0.6_0.4"]
    assert (out / "tour_eval" / "grid.png").is_file() and (out / "tour_eval" / "results.md").is_file()
