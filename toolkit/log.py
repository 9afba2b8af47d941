"""easel's logger: messages to the console and, during a run, to the run folder's log.txt."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("easel")


def setup_console(verbose: bool = False) -> None:
    """Print easel's messages to stderr, once."""
    if any(getattr(h, "_easel_console", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._easel_console = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def attach_file(path: Path) -> logging.Handler:
    """Also append messages, time-stamped, to ``path`` until ``detach`` is called."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return handler


def detach(handler: logging.Handler) -> None:
    log.removeHandler(handler)
    handler.close()
