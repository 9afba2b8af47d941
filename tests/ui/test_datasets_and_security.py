"""Datasets (captions, uploads, trigger words, what training skips), the queue's store, the token, served files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui.conftest import make_settings


def _png(colour: tuple[int, int, int] = (200, 90, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 80), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_caption_edited_in_place_is_on_disk(quiet: Any, settings: Any) -> None:
    page = quiet.get("/datasets/demo").text
    assert "000_flower.png" in page and "a painting of a flower, soft warm colors" in page
    answer = quiet.post("/api/datasets/demo/caption", data={"image": "000_flower.png", "caption": "  a  red flower\n"})
    assert answer.json()["ok"]
    assert (settings.datasets / "demo" / "000_flower.txt").read_text() == "a red flower\n"
    assert quiet.post("/api/datasets/demo/caption", data={"image": "../../secret.png", "caption": "x"}).status_code == 400


def test_a_metadata_caption_is_not_hidden_behind_a_caption_file(quiet: Any, settings: Any) -> None:
    folder = settings.datasets / "demo"
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "001_house.png", "text": "from metadata"}) + "\n")
    answer = quiet.post("/api/datasets/demo/caption", data={"image": "001_house.png", "caption": "ignored"})
    assert answer.status_code == 400 and "comes from a metadata file" in answer.json()["message"]


def test_uploads_store_images_and_refuse_the_rest_with_a_reason(quiet: Any, settings: Any) -> None:
    folder = settings.datasets / "demo"
    files = [("files", ("new.png", _png(), "image/png")), ("files", ("new.txt", b"a new caption", "text/plain"))]
    assert quiet.post("/api/datasets/demo/upload", files=files).json() == {"ok": True, "stored": ["new.png", "new.txt"], "refused": []}
    assert (folder / "new.png").read_bytes() == _png() and (folder / "new.txt").read_text() == "a new caption"
    bad = [("files", ("notes.exe", b"MZ...", "application/octet-stream")), ("files", ("fake.png", b"not a png", "image/png")),
           ("files", ("../escape.png", _png(), "image/png"))]
    body = quiet.post("/api/datasets/demo/upload", files=bad).json()
    assert body["stored"] == []
    messages = {item["name"]: item["message"] for item in body["refused"]}
    assert "is not an image: accepted are .jpg" in messages["notes.exe"]
    assert "is not a readable image" in messages["fake.png"] and not (folder / "fake.png").exists()
    assert "path separator" in messages["../escape.png"] and not (settings.datasets / "escape.png").exists()


def test_bulk_trigger_word_add_then_replace(quiet: Any, settings: Any) -> None:
    folder = settings.datasets / "demo"
    assert quiet.post("/api/datasets/demo/trigger", data={"mode": "add", "word": "warmstyle"}).json()["changed"] == 4
    assert quiet.post("/api/datasets/demo/trigger", data={"mode": "add", "word": "warmstyle"}).json()["changed"] == 0
    assert (folder / "002_tree.txt").read_text() == "warmstyle, a painting of a tree, soft warm colors\n"
    quiet.post("/api/datasets/demo/trigger", data={"mode": "replace", "old": "warmstyle", "word": "ohwx"})
    assert (folder / "002_tree.txt").read_text() == "ohwx, a painting of a tree, soft warm colors\n"


def test_the_page_lists_what_training_would_skip_and_why(quiet: Any, settings: Any) -> None:
    folder = settings.datasets / "demo"
    (folder / "broken.png").write_bytes(_png()[:60])
    (folder / "anim.gif").write_bytes(b"GIF89a")
    page = quiet.get("/datasets/demo").text
    assert "Training would skip" in page and "unsupported format (.gif)" in page and "anim.gif" in page
    assert "broken.png" in page.split("Training would skip")[1].split("</section>")[0]


def test_folders_are_listed_and_created_with_safe_names(quiet: Any, settings: Any) -> None:
    assert quiet.post("/api/datasets", data={"name": "portraits"}).json()["ok"]
    assert (settings.datasets / "portraits").is_dir()
    assert quiet.post("/api/datasets", data={"name": "../outside"}).status_code == 400
    page = quiet.get("/datasets").text
    assert "demo" in page and "4 images" in page and "portraits" in page


def test_only_the_configured_roots_are_served(quiet: Any, settings: Any, tmp_path: Path) -> None:
    (tmp_path / "private.txt").write_text("secret")
    assert quiet.get("/files/datasets/demo/000_flower.png").status_code == 200
    for url in ("/files/datasets/../private.txt", "/files/datasets/%2e%2e/private.txt", "/files/root/private.txt",
                "/files/output/.easel-ui/queue.sqlite", "/files/datasets//etc/passwd"):
        assert quiet.get(url).status_code == 404, url
    (settings.datasets / "demo" / "link.png").symlink_to(tmp_path / "private.txt")
    assert quiet.get("/files/datasets/demo/link.png").status_code == 404


def test_a_token_guards_every_request(settings: Any, registry: Any) -> None:
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from ui.server import create_app

    token = "t" * 24
    with TestClient(create_app(replace(settings, token=token), registry=registry, run_worker=False)) as client:
        for url in ("/", "/api/jobs", "/static/app.js", "/files/datasets/demo/000_flower.png", "/api/jobs/1/events"):
            assert client.get(url).status_code == 401, url
        assert client.post("/api/jobs", json={"yaml": ""}).status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        first = client.get(f"/?token={token}", follow_redirects=False)
        assert first.status_code == 303 and "token" not in first.headers["location"]
        assert client.get("/").status_code == 200  # the cookie the redirect set


def test_any_bind_but_loopback_gets_a_token() -> None:
    from toolkit.errors import EaselError
    from ui.settings import choose_token, is_loopback

    assert choose_token("127.0.0.1", None) == (None, False) and choose_token("localhost", None) == (None, False)
    token, made_up = choose_token("0.0.0.0", None)
    assert made_up and token and len(token) >= 16
    assert choose_token("192.168.1.5", "x" * 20) == ("x" * 20, False)
    assert is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(EaselError, match="at least 16 characters"):
        choose_token("0.0.0.0", "short")


def test_the_queue_keeps_its_order_across_restarts(tmp_path: Path) -> None:
    from ui.store import Store

    store = Store(tmp_path / "state")
    ids = [store.add(name=f"job{i}", kind="extension", device="cpu", config_text="x", run_dir=None, total_steps=1)
           for i in range(3)]
    assert store.move(ids[2], -2) and not store.move(999, 1)
    store.delete(ids[1])
    again = Store(tmp_path / "state")  # a UI restart: a new connection to the same file
    assert [row.name for row in again.all()] == ["job2", "job0"]
    assert again.request_stop(ids[0]) == "stopped" and again.get(ids[0]).message == "cancelled before it started"
    claimed = again.claim(set(), str)
    assert claimed is not None and claimed.name == "job2"
    assert again.claim({"cpu"}, str) is None  # the device is busy
    assert not again.delete(ids[2])  # running


def test_a_worker_that_finds_running_jobs_puts_them_back_first(tmp_path: Path) -> None:
    from ui.store import Store
    from ui.worker import Worker

    store = Store(tmp_path / "state")
    first = store.add(name="a", kind="extension", device="cpu", config_text="x", run_dir=None, total_steps=1)
    store.add(name="b", kind="extension", device="cpu", config_text="x", run_dir=None, total_steps=1)
    store.claim(set(), str)  # "a" was running when the machine went down
    worker = Worker(store, tmp_path)
    worker.stopping = True  # look once, start nothing
    worker.loop()
    rows = store.all()
    assert [row.name for row in rows] == ["a", "b"] and rows[0].status == "queued" and rows[0].id == first
    assert "continues from its last save" in rows[0].message


def test_the_settings_write_paths_as_the_user_would(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.relative(tmp_path / "output") == "output"
    assert settings.relative(Path("/elsewhere/x")) == "/elsewhere/x"


def test_the_worker_passes_over_a_job_whose_run_folder_another_run_holds(tmp_path: Path) -> None:
    import os

    from toolkit.run_lock import RunLock
    from ui.store import Store
    from ui.worker import Worker

    store = Store(tmp_path / "state")
    folder = tmp_path / "output" / "run"
    folder.mkdir(parents=True)
    held = RunLock.acquire(folder)  # this process, as a command-line run of the same config would
    blocked = store.add(name="run", kind="extension", device="cpu", config_text="job: x\n", run_dir=str(folder), total_steps=1)
    behind = store.add(name="other", kind="extension", device="cpu", config_text="job: x\n", run_dir=None, total_steps=1)
    worker = Worker(store, tmp_path)
    try:
        worker.start_free()
        row = store.get(blocked)
        assert row is not None and row.status == "queued" and row.pid is None
        assert row.waiting is not None and f"its run folder is in use by process {os.getpid()} on " in row.waiting
        assert list(worker.running) == [behind]  # the device's next job goes first
        worker.running[behind].process.wait(60)
        worker.reap()
        worker.start_free()
        assert not worker.running  # still held
        held.release()
        worker.start_free()
        assert list(worker.running) == [blocked] and store.get(blocked).waiting is None
        worker.running[blocked].process.wait(60)
        worker.reap()
    finally:
        held.release()
        for entry in worker.running.values():
            entry.process.kill()
    row = store.get(blocked)
    assert row is not None and row.status == "failed" and "unknown job 'x'" in row.message  # it ran: run.py said so
