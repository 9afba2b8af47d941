"""A UI server on a temporary folder: its own output/ and datasets/ (with the demo set), a worker, the tiny model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from toolkit.testing.demo import make

FAST_TRAINING = {
    "steps": "6", "sample_every": "3", "save_every": "3", "resolution": "64", "rank": "4", "alpha": "4",
    "prompts": "[trigger] a painting of a house\n[trigger] a painting of a boat",
}
"""Form fields that make the quickstart a few seconds long."""


def make_settings(root: Path, **extra: Any) -> Any:
    from ui.settings import Settings

    make(root / "datasets" / "demo", 4)
    return Settings(root=root, output=root / "output", datasets=root / "datasets", **extra)


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Any, registry: Any) -> Iterator[Any]:
    """A TestClient of the app with its worker process running (stopped at the end)."""
    from fastapi.testclient import TestClient

    from ui.server import create_app

    with TestClient(create_app(settings, registry=registry)) as test_client:
        yield test_client


def events(client: Any, job_id: int, until: Any = None, timeout: float = 240) -> list[tuple[str, Any]]:
    """The job's server-sent events, until ``end`` (or until ``until(name, data)`` is true)."""
    seen: list[tuple[str, Any]] = []
    deadline = time.time() + timeout
    name = None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                seen.append((name, json.loads(line[6:])))
                if name == "end" or (until is not None and until(name, seen[-1][1])):
                    return seen
            assert time.time() < deadline, f"no end of job {job_id} in {timeout} s; events: {[n for n, _ in seen]}"
    return seen


def wait_for(check: Any, timeout: float = 120, what: str = "the condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the browser tests left their screenshots."""
    from tests.ui.test_browser import SHOTS

    if (SHOTS / "timings.json").is_file():
        terminalreporter.write_line(f"UI screenshots and timings: {SHOTS}")
