"""A UI server on a temporary folder: its own output/ and datasets/ (with the demo set), a worker, the tiny model."""

from __future__ import annotations

import json
import shutil
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


def ui_client(settings: Any, registry: Any, **options: Any) -> Any:
    """A TestClient of the app (enter it to start the app and, unless ``run_worker=False``, its worker)."""
    from fastapi.testclient import TestClient

    from ui.server import create_app

    return TestClient(create_app(settings, registry=registry, **options))


@pytest.fixture
def client(settings: Any, registry: Any) -> Iterator[Any]:
    """A TestClient of the app with its worker process running (stopped at the end)."""
    with ui_client(settings, registry) as running:
        yield running


@pytest.fixture
def quiet(settings: Any, registry: Any) -> Iterator[Any]:
    """A TestClient without the queue's worker (for tests that run no job)."""
    with ui_client(settings, registry, run_worker=False) as running:
        yield running


@pytest.fixture(scope="session")
def two_loras(tmp_path_factory: Any, registry: Any) -> Path:
    """An output folder with random LoRAs for the tiny Z-Image model: warm/warm.safetensors, cool/cool.safetensors."""
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter
    from toolkit.testing.tiny import save_random_lora

    output = tmp_path_factory.mktemp("loras")
    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), registry, device="cpu", dtype="fp32")
    for seed, name in ((1, "warm"), (2, "cool")):
        save_random_lora(adapter.pipeline(), output / name / f"{name}.safetensors", adapter.lora_targets(False), seed=seed)
    return output


def copy_loras(loras: Path, output: Path) -> None:
    """The ``two_loras`` run folders, copied into ``output``."""
    shutil.copytree(loras, output, dirs_exist_ok=True)


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
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the browser tests left their screenshots."""
    from tests.ui.test_browser import SHOTS

    if (SHOTS / "timings.json").is_file():
        terminalreporter.write_line(f"UI screenshots and timings: {SHOTS}")
