"""Training state files and random generator capture."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from toolkit.errors import EaselError
from toolkit.train.state import (capture_rng, latest_state, list_states, load_state, preserved_rng, restore_rng,
                                 save_state, state_path)


def draws(generator: torch.Generator) -> tuple:
    return (random.random(), float(np.random.rand()), torch.rand(2).tolist(), torch.rand(2, generator=generator).tolist())


def test_capture_and_restore_replay_every_generator() -> None:
    generator = torch.Generator().manual_seed(5)
    state = capture_rng(generator)
    first = draws(generator)
    restore_rng(state, generator)
    assert draws(generator) == first


def test_preserved_rng_leaves_the_global_generators_alone() -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), float(np.random.rand()), torch.rand(2).tolist())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with preserved_rng():
        torch.rand(100), np.random.rand(5), random.random()
    assert (random.random(), float(np.random.rand()), torch.rand(2).tolist()) == expected


def test_state_files_round_trip_with_weights_only(tmp_path) -> None:
    generator = torch.Generator().manual_seed(9)
    state = {"step": 3, "position": {"epoch": 1, "index": 2}, "rng": [capture_rng(generator)],
             "network": {"a.lora_A.weight": torch.ones(2, 2)}, "ema": None}
    path = state_path(tmp_path, "run", 3)
    save_state(path, state)
    assert path.name == "run_000000003.state.pt"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    loaded = load_state(path)
    assert loaded["step"] == 3 and torch.equal(loaded["network"]["a.lora_A.weight"], torch.ones(2, 2))
    first = draws(generator)
    restore_rng(loaded["rng"][0], generator)
    assert draws(generator) == first


def test_latest_state_by_step(tmp_path) -> None:
    assert latest_state(tmp_path, "run") is None
    for step in (10, 2, 100):
        save_state(state_path(tmp_path, "run", step), {"step": step})
    save_state(state_path(tmp_path, "other", 500), {"step": 500})
    (tmp_path / "run_000000999.safetensors").write_bytes(b"")
    assert [s for s, _ in list_states(tmp_path, "run")] == [2, 10, 100]
    assert latest_state(tmp_path, "run") == state_path(tmp_path, "run", 100)


def test_a_damaged_state_is_a_clear_error(tmp_path) -> None:
    path = state_path(tmp_path, "run", 1)
    path.write_bytes(b"not a torch file")
    with pytest.raises(EaselError, match="cannot read the training state .*Delete it"):
        load_state(path)
