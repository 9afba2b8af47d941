"""The jobs API through FastAPI's TestClient, with the real worker process and the tiny model.

One UI (``shared``) serves the tests that leave it running, and one form job trained to its end there (``formrun``)
serves the tests that read or continue it; the test that restarts a UI continues that run in a UI of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.ui.conftest import FAST_TRAINING, events, make_settings, ui_client, wait_for
from toolkit.run_lock import RunLock
from ui import form
from ui.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory: Any, registry: Any) -> Iterator[tuple[Any, Any]]:
    """(client, settings) of one UI with its worker, for this module's tests that do not stop it."""
    settings = make_settings(tmp_path_factory.mktemp("ui-api"))
    with ui_client(settings, registry) as client:
        yield client, settings


@pytest.fixture(scope="module")
def formrun(shared: tuple[Any, Any]) -> tuple[int, list[tuple[str, Any]]]:
    """(job id, its events until the end) of a job queued from the form fields and trained to the end."""
    client, _ = shared
    answer = client.post("/api/jobs/form", data={**FAST_TRAINING, "name": "formrun"}).json()
    assert answer["ok"], answer
    return answer["id"], events(client, answer["id"])


def test_a_job_from_the_form_runs_to_the_end_with_progress_samples_and_the_lora(shared: tuple[Any, Any], formrun: Any) -> None:
    client, settings = shared
    job_id, seen = formrun
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
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "done"


def _editor_text(page: str) -> str:
    import html

    return html.unescape(re.search(r'<textarea id="yaml"[^>]*>(.*?)</textarea>', page, re.S).group(1))


def test_clone_takes_a_free_name_and_continue_the_same_name_with_more_steps(shared: tuple[Any, Any], formrun: Any) -> None:
    client, _ = shared
    job_id, _ = formrun
    assert "name: formrun-2" in _editor_text(client.get(f"/jobs/new?source={job_id}").text)
    page = client.get(f"/jobs/new?source={job_id}&more=true").text
    text = _editor_text(page)
    assert "name: formrun\n" in text and "steps: 12" in text and "Continues" in page


def test_a_job_whose_process_dies_is_failed_with_its_log_and_the_queue_goes_on(shared: tuple[Any, Any]) -> None:
    client, settings = shared
    doomed = client.post("/api/jobs/form", data={**FAST_TRAINING, "name": "doomed", "steps": "100000"}).json()["id"]
    after = client.post("/api/datasets/demo/job", data={"kind": "prep"}).json()["id"]  # a quick job behind it
    events(client, doomed, until=lambda name, data: name == "log" and "Loading zimage:turbo" in data["text"])
    assert client.get(f"/api/jobs/{after}").json()["status"] == "queued"  # one job per device at a time
    os.kill(client.get(f"/api/jobs/{doomed}").json()["pid"], signal.SIGKILL)  # what an out-of-memory kill does
    events(client, doomed)
    row = client.get(f"/api/jobs/{doomed}").json()
    assert row["status"] == "failed" and "died of signal 9" in row["message"]
    assert "Loading zimage:turbo from tiny:zimage" in row["message"]  # the tail of its console output
    assert events(client, after)[-1] == ("end", {"status": "done"})
    assert len(list((settings.datasets / "demo_prepared").glob("*.png"))) == 4  # the prep job ran on the folder


def _numbered(folder: Path, pattern: str, after: int) -> list[Path]:
    """Files of ``folder`` matching ``pattern`` whose step (the 9 digits in their name) is past ``after``, in order."""
    return sorted(p for p in folder.glob(pattern) if int(re.search(r"\d{9}", p.name).group()) > after)


def _continued(shared: tuple[Any, Any], formrun: Any, settings: Any) -> str:
    """The finished form run's "continue with more steps" config, long and without saves or samples of its own, and a
    copy of its run folder under ``settings`` (the same relative paths work there)."""
    client, first = shared
    text = _editor_text(client.get(f"/jobs/new?source={formrun[0]}&more=true").text)
    shutil.copytree(first.output / "formrun", settings.output / "formrun")
    return form.set_keys(text, {form.PROCESS + ("train", "steps"): 100000, form.PROCESS + ("save", "save_every"): 100000,
                                form.PROCESS + ("sample", "sample_every"): 100000})


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


def test_a_continued_run_waits_for_a_held_folder_then_resumes_saves_samples_survives_a_ui_restart_and_stops(
        shared: tuple[Any, Any], formrun: Any, client: Any, settings: Any, registry: Any) -> None:
    """The finished form run continued in a UI of its own (it is stopped here): it waits while another process holds
    its run folder, resumes from the last save, takes "save now" and "sample now", is saved and queued first when the
    UI stops, continues at the next start, and saves when stopped from the page."""
    job_id = _queued_while_held(client, settings, _continued(shared, formrun, settings))
    seen = events(client, job_id, until=lambda name, data: name == "progress" and data["step"] >= 8)
    steps = [row[0] for name, data in seen if name == "progress" for row in data["rows"]]
    assert steps == list(range(1, steps[-1] + 1))  # the whole curve: the first run's steps, then the new ones
    assert client.get(f"/api/jobs/{job_id}").json()["waiting"] is None
    assert "run.py" in [data["holder"] for name, data in seen if name == "holder"][-1]  # the watch page: its own run
    log = settings.state / "jobs" / f"{job_id}.log"
    assert "Resuming from formrun_000000006.state.pt at step 6" in log.read_text() and "in use" not in log.read_text()
    folder = settings.output / "formrun"
    assert client.post(f"/api/jobs/{job_id}/save").json()["ok"]
    assert client.post(f"/api/jobs/{job_id}/sample").json()["ok"]
    wait_for(lambda: _numbered(folder, "formrun_*.safetensors", 6), what="the requested save")
    wait_for(lambda: _numbered(folder / "samples", "*_00.png", 6), what="the requested samples")
    client.__exit__(None, None, None)  # the UI stops: the job saves and goes back to the queue
    row = Store(settings.state).get(job_id)
    assert row is not None and row.status == "queued" and "interrupted when the UI stopped" in row.message
    saved = _numbered(folder, "formrun_*.safetensors", 6)
    assert len(saved) == 2  # the requested save and the one the stop made
    state = _numbered(folder, "formrun_*.state.pt", 6)[-1].name
    with ui_client(settings, registry) as again:  # the next start continues it
        events(again, job_id, until=lambda name, data: name == "log" and f"Resuming from {state}" in data["text"])
        assert again.post(f"/api/jobs/{job_id}/stop").json()["status"] == "stopping"
        seen = events(again, job_id)
        row = again.get(f"/api/jobs/{job_id}").json()
        assert (row["status"], row["exit_code"]) == ("stopped", 143), row
        assert seen[-1] == ("end", {"status": "stopped"})
        assert again.post(f"/api/jobs/{job_id}/save").status_code == 409  # not running any more
    assert _numbered(folder, "formrun_*.safetensors", 6)[-1].name > saved[-1].name  # the stop after the restart saved


def _count(client: Any) -> int:
    return len(client.get("/api/jobs").json())


def test_malformed_yaml_shows_the_cli_error_and_queues_nothing(shared: tuple[Any, Any]) -> None:
    client, _ = shared
    before = _count(client)
    answer = client.post("/api/jobs", json={"yaml": "job: extension\nconfig:\n  name: x\n  process: [\n"})
    body = answer.json()
    assert answer.status_code == 400 and not body["ok"]
    assert "1 problem in the config" in body["message"] and "YAML syntax error" in body["message"]
    assert body["issues"][0]["line"] == 5
    checked = client.post("/api/validate", json={"yaml": "job: extension\nconfig:\n  name: x\n  process: [\n"}).json()
    assert not checked["ok"] and checked["issues"][0]["line"] == 5
    assert _count(client) == before


def test_a_missing_dataset_is_the_dry_runs_error_and_queues_nothing(shared: tuple[Any, Any]) -> None:
    client, _ = shared
    before = _count(client)
    answer = client.post("/api/jobs/form", data={**FAST_TRAINING, "dataset": "datasets/nowhere"})
    body = answer.json()
    assert answer.status_code == 400
    assert "the dataset folder 'datasets/nowhere' does not exist" in body["message"] and "line" in body["message"]
    assert _count(client) == before
