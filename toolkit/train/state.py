"""Training state beside each save, so that running the same config again continues exactly.

A state file ``<name>_<step:09d>.state.pt`` holds: the step, the data position, the adapter's weights in
full precision, the optimizer, the lr schedule, the EMA, the fp16 loss scaler, and the random number
generators of every process (python, numpy, torch CPU and CUDA, and the trainer's noise generator).
It is written with ``torch.save`` through ``atomic_write`` (refused when the adapter's weights are not finite)
and read with ``weights_only=True``.
"""

from __future__ import annotations

import random
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from toolkit.errors import EaselError
from toolkit.lora_io.keys import describe_names, non_finite
from toolkit.output import atomic_write
from toolkit.paths import safe_child

STATE_SUFFIX = ".state.pt"


def state_path(folder: Path, name: str, step: int) -> Path:
    return safe_child(folder, f"{name}_{step:09d}{STATE_SUFFIX}", "save file name")


def list_states(folder: Path, name: str) -> list[tuple[int, Path]]:
    """(step, path) of every state file of run ``name`` in ``folder``, oldest first."""
    pattern = re.compile(rf"{re.escape(name)}_(\d{{9}}){re.escape(STATE_SUFFIX)}")
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_state(folder: Path, name: str) -> Path | None:
    """The newest state file, or None."""
    states = list_states(folder, name)
    return states[-1][1] if states else None


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random generator's state, in a form ``torch.load(weights_only=True)`` accepts."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    if generator is not None:
        state["noise"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Put the generators back as ``capture_rng`` found them."""
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "noise" in state:
        generator.set_state(state["noise"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Whatever runs inside (sampling) leaves the global random generators as they were."""
    saved = capture_rng()
    try:
        yield
    finally:
        restore_rng(saved)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a state file atomically.

    Raises:
        EaselError: the adapter's weights hold inf or NaN (nothing is written); DiskFull: the disk filled up.
    """
    bad = non_finite(state.get("network", {}))
    if bad:
        raise EaselError(f"refused to write {path}: the adapter's weights hold inf or NaN ({describe_names(bad)}), "
                         "so training diverged. Nothing was written or replaced.")
    with atomic_write(path) as handle:
        torch.save(state, handle)


def load_state(path: Path) -> dict[str, Any]:
    """Read a state file written by ``save_state``.

    Raises:
        EaselError: the file cannot be read.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise EaselError(f"cannot read the training state {path} ({reason}). Delete it to resume from the one before.") from None


def state_mismatch(path: Path, err: Exception, saved: dict[str, Any], current: dict[str, Any]) -> str:
    """The error for a training state that does not load into this run's network or optimizer; it names
    ``train.flat_optimizer`` when that setting is the difference (one parameter per group in one, many in the other)."""
    groups = [[len(group["params"]) for group in optimizer["param_groups"]] for optimizer in (saved, current)]
    saved_flat, current_flat = (all(count == 1 for count in sizes) for sizes in groups)
    if len(groups[0]) == len(groups[1]) and saved_flat != current_flat:
        was = "true" if saved_flat else "false"
        return (f"the training state {path} holds the optimizer's state with train.flat_optimizer {was}, which this "
                f"config does not have; set train.flat_optimizer: {was} to resume this run.")
    return (f"the training state {path} does not fit this config ({err}). The network or optimizer settings changed: "
            f"use another config.name, or delete the state files to start over.")
