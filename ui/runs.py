"""Reading a run folder as the trainer leaves it: loss.csv, samples/, the LoRA saves, its lock, and console logs.

Nothing here imports the trainer: these are the files the README names (``loss.csv`` with one
``step,loss,lr,seconds`` row per step, ``samples/<step:09d>_<i:02d>.<ext>``, ``<name>[_<step:09d>].safetensors``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.run_lock import in_use

TAIL_BYTES = 64 * 1024
SAMPLE = re.compile(r"(\d{9})_(\d{2})\.(png|jpg|jpeg|webp)")
STEP_SAVE = re.compile(r".*_(\d{9})\.safetensors")


def in_use_by(run_dir: Path | str | None) -> str | None:
    """Who holds ``run_dir``'s lock (``.easel.lock``: a run writing there, from this UI or a command line), or None."""
    if not run_dir:
        return None
    error = in_use(Path(run_dir))
    if error is None:
        return None
    return error.holder.describe() if error.holder is not None else "a run that has not written its name yet"


def tail_text(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a console log; a progress bar's carriage-return redraws keep only their last state."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            raw = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    shown = []
    for line in raw.split("\n"):
        parts = [part for part in line.split("\r") if part.strip()]
        if parts:
            shown.append(parts[-1].rstrip())
    return "\n".join(shown[-lines:])


class LossReader:
    """Reads loss.csv incrementally: each ``read`` returns the rows written since the last one."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.last_step = 0

    def read(self) -> list[tuple[int, float, float, float]]:
        """New (step, loss, lr, seconds) rows; a file rewritten from the start (a resumed run) is read again."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            self.offset, self.last_step = 0, 0
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a row being written is read next time
        self.offset += len(complete)
        rows = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            cells = line.split(",")
            if len(cells) != 4 or not cells[0].isdigit():
                continue
            rows.append((int(cells[0]), float(cells[1]), float(cells[2]), float(cells[3])))
        if rows:
            self.last_step = rows[-1][0]
        return rows


@dataclass(frozen=True)
class Save:
    """A LoRA file of the run."""

    name: str
    step: int | None
    """None for the final file."""
    size: int


def saves(folder: Path, name: str) -> list[Save]:
    """The run's LoRA files, numbered ones by step, the final one last."""
    found = []
    for path in folder.glob(f"{name}*.safetensors") if folder.is_dir() else []:
        match = STEP_SAVE.fullmatch(path.name)
        if path.name == f"{name}.safetensors" or (match and path.name == f"{name}_{match.group(1)}.safetensors"):
            found.append(Save(path.name, int(match.group(1)) if match else None, path.stat().st_size))
    return sorted(found, key=lambda s: (s.step is None, s.step or 0))


def samples(folder: Path) -> dict[int, dict[int, str]]:
    """step -> prompt index -> file name of ``samples/`` (grids left out)."""
    grid: dict[int, dict[int, str]] = {}
    for entry in os.scandir(folder) if folder.is_dir() else []:
        match = SAMPLE.fullmatch(entry.name)
        if match:
            grid.setdefault(int(match.group(1)), {})[int(match.group(2))] = entry.name
    return dict(sorted(grid.items()))


def timing(rows: list[tuple[int, float, float, float]], step: int, total: int | None) -> tuple[float | None, float | None]:
    """(seconds per step over the last 20 steps, seconds left) from loss.csv rows."""
    recent = [row[3] for row in rows[-20:]]
    if not recent:
        return None, None
    per_step = sum(recent) / len(recent)
    left = per_step * (total - step) if total else None
    return per_step, left
