"""Benchmark figures that can be read back: every GPU run appends itself to ``bench/results/<date>-<device>.json``.

A file holds the runs of one day on one kind of device (``{"runs": [...]}``); a run is the command, the device's
name, the library versions and one record per measured case. Every record has ``device`` and ``case``; where it
measured them, the figures under the names the speed goals use (``zimage_1024_s_per_step``,
``sdxl_1024_s_per_step``, ``zimage_turbo_1024_s_per_image``: ``<arch>_<resolution>_s_per_step`` /
``..._s_per_image``), ``peak_gib``, and ``baseline``: the case of the same run it is compared with, its figure and
the ratio (None for the baseline itself). ``bench/report.py`` makes the tables of docs/PERFORMANCE.md from these
files. Runs copied from the printed table of a run made before the scripts wrote these files say
``"source": "typed in"``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: Any) -> str:
    """The GPU's name (``NVIDIA H100 80GB HBM3``), or ``CPU (<processor>)``."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def slug(name: str) -> str:
    """A file-name part for a device name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def versions() -> dict[str, str]:
    """torch, CUDA, diffusers, peft and the easel commit the figures were measured with."""
    import diffusers
    import peft
    import torch

    found = {"torch": torch.__version__, "cuda": str(torch.version.cuda), "diffusers": diffusers.__version__,
             "peft": peft.__version__, "python": sys.version.split()[0]}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=RESULTS.parent,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        found["easel"] = commit + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        found["easel"] = "unknown"
    return found


def metric(arch: str, resolution: int, unit: str) -> str:
    """The name a figure goes under: ``metric('zimage', 1024, 's_per_step')`` -> ``zimage_1024_s_per_step``."""
    return f"{arch}_{resolution}_{unit}"


def with_baselines(records: list[dict[str, Any]], unit: str, is_baseline: Any) -> list[dict[str, Any]]:
    """Each record with ``baseline`` set: the first record of the same ``arch`` and resolution for which
    ``is_baseline(record)`` holds, its figure and the ratio; None for that record itself and where there is none."""
    chosen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for record in records:
        key = (record.get("arch"), record.get("resolution"))
        if key not in chosen and is_baseline(record) and record.get(unit) is not None:
            chosen[key] = record
    out = []
    for record in records:
        base = chosen.get((record.get("arch"), record.get("resolution")))
        baseline = None
        if base is not None and base is not record and record.get(unit) is not None:
            baseline = {"case": base["case"], unit: base[unit], "ratio": round(record[unit] / base[unit], 4)}
        out.append({**record, "baseline": baseline})
    return out


def write(script: str, argv: list[str], device: Any, records: list[dict[str, Any]], folder: Path = RESULTS,
          today: datetime.date | None = None) -> Path:
    """Append one run to ``folder/<date>-<device>.json`` (created if missing; replaced atomically) and return its path."""
    name = device_name(device)
    day = (today or datetime.date.today()).isoformat()
    path = Path(folder) / f"{day}-{slug(name)}.json"
    run = {"command": " ".join(["python", f"bench/{script}", *argv]), "date": day, "device": name,
           "versions": versions(), "records": [{"device": name, **record} for record in records]}
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"runs": []}
    data["runs"].append(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def target_folder(requested: str | None, disabled: bool, device: Any) -> Path | None:
    """Where a benchmark writes: ``--results DIR``; by default bench/results on a GPU, nowhere on the CPU (the tiny
    CPU runs check the scripts, their figures mean nothing); ``--no-results``: nowhere."""
    if disabled:
        return None
    if requested is not None:
        return Path(requested)
    return RESULTS if device.type == "cuda" else None


def finish(script: str, given: list[str], device: Any, records: Callable[[], list[dict[str, Any]]], requested: str | None,
           disabled: bool) -> None:
    """A benchmark's last lines: its ``records()`` written where ``--results`` / ``--no-results`` say (see
    ``target_folder``), and the command that reruns it."""
    folder = target_folder(requested, disabled, device)
    if folder is not None:
        print(f"results: {write(script, given, device, records(), folder)}")
    print(f"rerun: python bench/{script} " + " ".join(given))


def load(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """Every run of every file in ``folder``, oldest file first."""
    runs = []
    for path in sorted(Path(folder).glob("*.json")):
        for run in json.loads(path.read_text(encoding="utf-8"))["runs"]:
            runs.append({**run, "file": path.name})
    return runs
