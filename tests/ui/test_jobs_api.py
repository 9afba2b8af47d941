"""The jobs API through FastAPI's TestClient, with the real worker process and the tiny model."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import FAST_TRAINING, events, wait_for
from toolkit.run_lock import RunLock
from ui.store import Store

pytestmark = pytest.mark.slow


def test_a_job_from_the_form_runs_to_the_end_with_progress_samples_and_the_lora(client: Any, settings: Any) -> None:
    answer = client.post("/api/jobs/form", data={**FAST_TRAINING, "name": "formrun"}).json()
    assert answer["ok"], answer
    seen = events(client, answer["id"])
    names = [name for name, _ in seen]
    assert names[-1] == "end" and seen[-1][1]["status"] == "done"
    progress = [data for name, data in seen if name == "progress"]
    assert progress[-1]["step"] == progress[-1]["total"] == 6
    assert [row[0] for data in progress for row in data["rows"]] == [1, 2, 3, 4, 5, 6]  # every step once, in order
    samples = [data for name, data in seen if name == "samples"][-1]
    assert sorted(samples, key=int) == ["0", "3", "6"] and sorted(samples["6"]) == ["0", "1"]
    image = client.get(samples["6"]["1"])
    assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    saves = [data for name, data in seen if name == "saves"][-1]
    assert [save["name"] for save in saves][-1] == "formrun.safetensors"
    assert (settings.output / "formrun" / "formrun.safetensors").is_file()
    download = client.get(saves[-1]["url"])
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert client.get("/api/jobs").json()[0]["status"] == "done"
    _clone_and_continue(client, settings, answer["id"])


def _editor_text(page: str) -> str:
    import html
    import re

    return html.unescape(re.search(r'<textarea id="yaml"[^>]*>(.*?)</textarea>', page, re.S).group(1))


def _clone_and_continue(client: Any, settings: Any, job_id: int) -> None:
    """Clone: the same config under a free name. Continue: the same name (so the same run folder), more steps."""
    assert "name: formrun-2" in _editor_text(client.get(f"/jobs/new?source={job_id}").text)
    page = client.get(f"/jobs/new?source={job_id}&more=true").text
    text = _editor_text(page)
    assert "name: formrun\n" in text and "steps: 12" in text and "Continues" in page
    again = _queued_while_held(client, settings, text)
    seen = events(client, again)
    assert seen[-1][1]["status"] == "done" and client.get(f"/api/jobs/{again}").json()["waiting"] is None
    holders = [data["holder"] for name, data in seen if name == "holder"]
    assert holders and "run.py" in holders[0] and holders[-1] is None  # the watch page: the job's own run, then none
    steps = [row[0] for name, data in seen if name == "progress" for row in data["rows"]]
    assert steps == list(range(1, 13))  # the whole curve: the first run's steps, then the new ones
    log = (settings.output / ".easel-ui" / "jobs" / f"{again}.log").read_text()
    assert "Resuming from formrun_000000006.state.pt at step 6" in log and "in use" not in log


def _queued_while_held(client: Any, settings: Any, text: str) -> int:
    """Queue ``text`` while this process holds its run folder, as a command-line run of it would: the job waits and
    says who holds the folder; released, it starts."""
    held = RunLock.acquire(settings.output / "formrun")
    try:
        job_id = client.post("/api/jobs", json={"yaml": text}).json()["id"]

        def looked() -> Any:
            row = client.get(f"/api/jobs/{job_id}").json()
            return row if row["waiting"] or row["status"] != "queued" else None

        row = wait_for(looked, what="the worker to look at the job")
        assert row["status"] == "queued" and row["pid"] is None and not Store(settings.state).log_path(job_id).exists()
        assert f"its run folder is in use by process {os.getpid()} on " in row["waiting"]
        assert f"process {os.getpid()} on " in client.get("/partials/queue").text
        assert f"in use by process {os.getpid()} on " in client.get(f"/jobs/{job_id}").text
    finally:
        held.release()
    return job_id


def _running_step(client: Any, job_id: int, at_least: int) -> None:
    events(client, job_id, until=lambda name, data: name == "progress" and data["step"] >= at_least)


def test_save_now_sample_now_a_ui_restart_and_stop(client: Any, settings: Any, registry: Any) -> None:
    from fastapi.testclient import TestClient

    from ui.server import create_app

    fields = {**FAST_TRAINING, "name": "longrun", "steps": "100000", "sample_every": "100000", "save_every": ""}
    job_id = client.post("/api/jobs/form", data=fields).json()["id"]
    _running_step(client, job_id, 2)
    folder = settings.output / "longrun"
    assert client.post(f"/api/jobs/{job_id}/save").json()["ok"]
    assert client.post(f"/api/jobs/{job_id}/sample").json()["ok"]
    wait_for(lambda: list(folder.glob("longrun_*.safetensors")), what="the requested save")
    wait_for(lambda: [p for p in (folder / "samples").glob("*_00.png") if not p.name.startswith("000000000")],
             what="the requested samples")
    client.__exit__(None, None, None)  # the UI stops: the job saves and goes back to the queue
    row = Store(settings.state).get(job_id)
    assert row is not None and row.status == "queued" and "interrupted when the UI stopped" in row.message
    saved = sorted(folder.glob("longrun_*.safetensors"))
    assert len(saved) == 2  # the requested save and the one the stop made
    with TestClient(create_app(settings, registry=registry)) as again:  # the next start continues it
        events(again, job_id, until=lambda name, data: name == "log" and "Resuming from" in data["text"])
        assert again.post(f"/api/jobs/{job_id}/stop").json()["status"] == "stopping"
        seen = events(again, job_id)
        row = again.get(f"/api/jobs/{job_id}").json()
        assert (row["status"], row["exit_code"]) == ("stopped", 143), row
        assert seen[-1] == ("end", {"status": "stopped"})
        assert again.post(f"/api/jobs/{job_id}/save").status_code == 409  # not running any more
    assert sorted(folder.glob("longrun_*.safetensors"))[-1].name > saved[-1].name  # the stop after the restart saved


def test_a_job_whose_process_dies_is_failed_with_its_log_and_the_queue_goes_on(client: Any, settings: Any) -> None:
    doomed = client.post("/api/jobs/form", data={**FAST_TRAINING, "name": "doomed", "steps": "100000"}).json()["id"]
    after = client.post("/api/datasets/demo/job", data={"kind": "prep"}).json()["id"]  # a quick job behind it
    _running_step(client, doomed, 1)
    assert client.get(f"/api/jobs/{after}").json()["status"] == "queued"  # one job per device at a time
    os.kill(client.get(f"/api/jobs/{doomed}").json()["pid"], signal.SIGKILL)  # what an out-of-memory kill does
    events(client, doomed)
    row = client.get(f"/api/jobs/{doomed}").json()
    assert row["status"] == "failed" and "died of signal 9" in row["message"] and "Training doomed" in row["message"]
    assert events(client, after)[-1] == ("end", {"status": "done"})
    assert len(list((settings.datasets / "demo_prepared").glob("*.png"))) == 4  # the prep job ran on the folder


def test_malformed_yaml_shows_the_cli_error_and_queues_nothing(client: Any) -> None:
    answer = client.post("/api/jobs", json={"yaml": "job: extension\nconfig:\n  name: x\n  process: [\n"})
    body = answer.json()
    assert answer.status_code == 400 and not body["ok"]
    assert "1 problem in the config" in body["message"] and "YAML syntax error" in body["message"]
    assert body["issues"][0]["line"] == 5
    checked = client.post("/api/validate", json={"yaml": "job: extension\nconfig:\n  name: x\n  process: [\n"}).json()
    assert not checked["ok"] and checked["issues"][0]["line"] == 5
    assert client.get("/api/jobs").json() == []


def test_a_missing_dataset_is_the_dry_runs_error_and_queues_nothing(client: Any) -> None:
    answer = client.post("/api/jobs/form", data={**FAST_TRAINING, "dataset": "datasets/nowhere"})
    body = answer.json()
    assert answer.status_code == 400
    assert "the dataset folder 'datasets/nowhere' does not exist" in body["message"] and "line" in body["message"]
    assert client.get("/api/jobs").json() == []
