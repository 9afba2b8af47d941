"""Requests to a running trainer (toolkit.train.requests): "save now" and "sample now" act after the next step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.harness import run_main, write_config
from toolkit.train import requests


def test_requests_waiting_at_the_start_save_and_sample_after_the_first_step(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 4}, save={"save_every": None})
    folder = tmp_path / "output" / "fakerun"
    requests.request(folder, "save")
    requests.request(folder, "sample")
    assert requests.pending(folder) == {"save", "sample"}
    assert run_main([str(config)]) == 0
    assert (folder / "fakerun_000000001.safetensors").is_file()  # no save_every: only a request saves a step
    assert sorted(p.name for p in (folder / "samples").glob("000000001_*")) == ["000000001_00.png", "000000001_01.png",
                                                                               "000000001_grid.png"]
    assert not (folder / "samples" / "000000002_00.png").exists()  # taken once, not every step after
    assert requests.pending(folder) == set()


def test_an_unknown_request_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known: save, sample"):
        requests.request(tmp_path, "explode")


def test_a_disabled_reader_leaves_the_requests_for_the_main_process(tmp_path: Path) -> None:
    requests.request(tmp_path, "save")
    assert requests.Requests(tmp_path, enabled=False).take() == set()
    assert requests.Requests(tmp_path).take() == {"save"}
    assert requests.Requests(tmp_path).take() == set()
