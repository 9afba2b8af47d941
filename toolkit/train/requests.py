"""Requests to a running trainer from outside it ("save now", "sample now"): files in ``<run folder>/.requests/``.

The UI (or anyone) writes an empty file named after the request; the trainer polls the folder once per step,
acts on what it finds after that step and deletes the files. A request made while no trainer runs waits for
the next one. One ``os.scandir`` per step: the cost is a few microseconds, far below any training step.
"""

from __future__ import annotations

import os
from pathlib import Path

REQUESTS = ("save", "sample")
"""What can be asked: ``save`` writes a numbered LoRA and training state now, ``sample`` makes previews now."""
FOLDER = ".requests"


def request(run_folder: Path, what: str) -> Path:
    """Ask the trainer of ``run_folder`` for ``what`` (one of ``REQUESTS``) after its current step."""
    if what not in REQUESTS:
        raise ValueError(f"unknown request '{what}'; known: {', '.join(REQUESTS)}")
    folder = Path(run_folder) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / what
    path.touch()
    return path


def pending(run_folder: Path) -> set[str]:
    """The requests waiting in ``run_folder`` (not taken)."""
    try:
        return {entry.name for entry in os.scandir(Path(run_folder) / FOLDER) if entry.name in REQUESTS}
    except (FileNotFoundError, NotADirectoryError):
        return set()


class Requests:
    """The trainer's side: ``take()`` once per step returns the requests made since the last call."""

    def __init__(self, run_folder: Path, *, enabled: bool = True):
        """``enabled``: only the main process of a data-parallel run reads the folder."""
        self.folder = Path(run_folder) / FOLDER
        self.enabled = enabled

    def take(self) -> set[str]:
        """The waiting requests, removed from the folder."""
        if not self.enabled:
            return set()
        found = pending(self.folder.parent)
        for name in found:
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:  # taken already (a second reader); the request still counts once here
                pass
        return found
