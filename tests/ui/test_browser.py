"""The UI in a real browser: Playwright drives Debian's headless Chromium against ``python run.py --ui``.

Each page is saved as a screenshot under ``$EASEL_UI_SCREENSHOTS`` (default ``output/ui-screenshots``; the path
is printed at the end of the run), with the page load times and the event latencies in ``timings.json``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ROOT
from tests.ui.conftest import copy_loras, make_settings, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("EASEL_UI_SCREENSHOTS", ROOT / "output" / "ui-screenshots"))
TIMINGS: dict[str, Any] = {"page_load_ms": {}, "event_latency_ms": []}


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    return None


# Skipped where Chromium or playwright is missing, except in CI (CI=true), where they must run and fail instead.
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(_missing() is not None and not os.environ.get("CI"), reason=str(_missing()))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any, request: Any) -> Iterator[tuple[str, Any]]:
    """``python run.py --ui`` in a fresh folder (demo dataset, two LoRAs), as a user starts it."""
    root = tmp_path_factory.mktemp("ui")
    settings = make_settings(root)
    port = _free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--ui", "--port", str(port)], cwd=root,
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        copy_loras(request.getfixturevalue("two_loras"), settings.output)  # made (once) while the server starts
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, (root / "server.log").read_text()
                time.sleep(0.05)
        yield base, settings
    finally:
        process.terminate()
        process.wait(60)
        log.close()
    assert "Traceback" not in (root / "server.log").read_text(), (root / "server.log").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "timings.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, errors


def visit(page: Any, url: str, label: str) -> None:
    page.goto(url)
    page.wait_for_load_state("load")
    TIMINGS["page_load_ms"][label] = page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0]; return Math.round(n.loadEventEnd - n.startTime); }")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_job_made_in_the_form_trains_while_the_page_watches(server: tuple[str, Any], page: Any) -> None:
    base, settings = server
    visit(page, base + "/jobs/new", "new job")
    page.wait_for_selector(".validation.ok")
    page.fill("input[name=name]", "browserrun")
    page.fill("input[name=steps]", "12")
    page.fill("input[name=sample_every]", "6")
    page.fill("input[name=save_every]", "6")
    page.fill("input[name=resolution]", "64")
    page.wait_for_function("() => document.getElementById('yaml').value.includes('steps: 12')")
    yaml = page.input_value("#yaml").replace("lr: 5e-3", "lr: 4e-3")
    page.fill("#yaml", yaml)  # the editor's change shows in the form
    page.wait_for_function("() => document.querySelector('input[name=lr]').value === '0.004'")
    shot(page, "1-new-job")
    page.click("#queue-button")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    TIMINGS["page_load_ms"]["watch"] = page.evaluate(
        "() => Math.round(performance.getEntriesByType('navigation')[0].loadEventEnd - performance.getEntriesByType('navigation')[0].startTime)")
    page.wait_for_function("() => Number(document.getElementById('step').textContent) >= 3", timeout=180_000)
    assert re.fullmatch(r"in use by process \d+ on .*run\.py .*\.yaml", page.text_content("#holder"))  # the job's run
    shot(page, "2-watch-training")
    first = page.eval_on_selector("#chart .raw", "line => line.getAttribute('points').split(' ').length")
    page.wait_for_function("n => document.querySelector('#chart .raw').getAttribute('points').split(' ').length > n",
                           arg=first, timeout=120_000)  # the curve grows while the page is open
    page.wait_for_selector("#samples img", timeout=120_000)
    page.wait_for_function("() => [...document.querySelectorAll('#samples img')].some(i => i.complete && i.naturalWidth === 64)")
    page.wait_for_selector("#status.done", timeout=180_000)
    page.wait_for_function("() => document.getElementById('holder').textContent === 'not in use'")
    page.wait_for_function("() => document.querySelectorAll('#samples tbody tr').length === 3")  # steps 0, 6, 12
    assert page.text_content("#step") == "12" and page.text_content("#total") == "12"
    assert "browserrun.safetensors" in page.text_content("#saves")
    TIMINGS["event_latency_ms"] = [entry["ms"] for entry in page.evaluate("() => easel.latencies")]
    shot(page, "3-watch-done")
    page.click("#samples img")
    page.wait_for_selector("#lightbox:not([hidden])")
    assert page.text_content("#lightbox p").startswith("step 12 · warmstyle a painting of a house")
    page.screenshot(path=str(SHOTS / "4-sample-enlarged.png"))
    page.keyboard.press("Escape")
    _continue_waits_while_another_process_holds_the_folder(page, base, settings.output / "browserrun")


def _continue_waits_while_another_process_holds_the_folder(page: Any, base: str, folder: Path) -> None:
    """Continue the finished job while this process holds its run folder, as a command-line run would: the new job
    is queued but not started, and its watch page and the jobs page say who holds the folder."""
    from toolkit.run_lock import RunLock

    held = RunLock.acquire(folder)
    try:
        page.click("#continue")
        page.wait_for_selector(".validation.ok")
        page.click("#queue-button")
        page.wait_for_url(re.compile(r".*/jobs/\d+$"))
        job_id = int(page.url.rsplit("/", 1)[1])
        page.wait_for_function("() => document.getElementById('message').textContent.startsWith('waiting: ')")
        assert f"its run folder is in use by process {os.getpid()} on " in page.text_content("#message")
        assert page.text_content("#holder").startswith(f"in use by process {os.getpid()} on ")
        assert page.text_content("#status") == "queued"
        shot(page, "5-watch-waiting")
        visit(page, base + "/", "jobs")
        row = page.locator(f"tr[data-id='{job_id}']")
        assert f"process {os.getpid()} on " in row.locator(".note").text_content()
        assert "browserrun" in page.text_content("table.queue") and "done" in page.text_content("table.queue")
        shot(page, "6-jobs")
        row.locator("button", has_text="Delete").click()
        page.wait_for_selector(f"tr[data-id='{job_id}']", state="detached")
    finally:
        held.release()


def test_malformed_yaml_shows_the_cli_error_inline_and_queues_nothing(server: tuple[str, Any], page: Any) -> None:
    base, _ = server
    before = len(json.load(urllib.request.urlopen(base + "/api/jobs")))
    visit(page, base + "/jobs/new", "new job (again)")
    page.fill("#yaml", "job: extension\nconfig:\n  name: broken\n  process:\n    - type: lora_trainer\n      network: {linear: 4\n")
    page.wait_for_selector(".validation.bad")
    assert "YAML syntax error" in page.text_content("#validation") and "line 7" in page.text_content("#validation")
    page.click("#queue-button")
    page.wait_for_function("() => document.getElementById('queue-state').textContent === 'not queued'")
    shot(page, "7-malformed-yaml")
    assert len(json.load(urllib.request.urlopen(base + "/api/jobs"))) == before


def test_a_caption_edited_in_the_grid_is_on_disk_and_a_non_image_is_refused(server: tuple[str, Any], page: Any) -> None:
    base, settings = server
    visit(page, base + "/datasets", "datasets")
    shot(page, "8-datasets")
    visit(page, base + "/datasets/demo", "dataset")
    area = page.locator("textarea[data-image='001_house.png']")
    area.fill("a small warm house by a lake")
    area.blur()
    page.wait_for_function("() => document.querySelector(\"textarea[data-image='001_house.png']\").parentElement"
                           ".querySelector('.saved').textContent === 'saved'")
    assert (settings.datasets / "demo" / "001_house.txt").read_text() == "a small warm house by a lake\n"
    page.evaluate("""() => {  // a file dropped on the drop zone, as a user drags one from the desktop
        const data = new DataTransfer();
        data.items.add(new File(['MZ not an image'], 'tool.exe', {type: 'application/octet-stream'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
    }""")
    page.wait_for_function("() => document.getElementById('tool-state').textContent.includes('is not an image')")
    assert not (settings.datasets / "demo" / "tool.exe").exists()
    shot(page, "9-dataset")


def test_generate_with_two_loras_at_different_weights(server: tuple[str, Any], page: Any) -> None:
    base, settings = server
    visit(page, base + "/generate", "generate")
    page.fill("textarea[name=prompt]", "a painting of a boat")
    page.fill("input[name=seed]", "11")
    page.fill("input[name=steps]", "2")
    for lora, weight in (("warm/warm.safetensors", "0.7"), ("cool/cool.safetensors", "-0.4")):
        row = page.locator(".lora", has=page.locator(f"[data-lora='{lora}']"))
        row.locator(".lora-on").check()
        row.locator(".lora-weight").fill(weight)
    page.check("input[name=vae_tiling]")
    page.click("#gen-button")
    page.wait_for_selector("#result img", timeout=180_000)
    page.wait_for_function("() => document.querySelector('#result img').complete && document.querySelector('#result img').naturalWidth > 0")
    parameters = page.text_content("#result .parameters")
    assert "<lora:warm:0.7>" in parameters and "<lora:cool:-0.4>" in parameters and "Seed: 11" in parameters
    assert len(list((settings.output / "generate").glob("*_11.png"))) == 1
    shot(page, "10-generate")



def _post_form(base: str, path: str, fields: dict[str, str]) -> dict[str, Any]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method="POST")) as answer:
        return json.load(answer)


def _queued_order(page: Any) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("table.queue tr.status-queued", "rows => rows.map(r => r.dataset.id)")]


def test_the_jobs_page_reorders_the_queue_and_stops_the_running_job(server: tuple[str, Any], page: Any) -> None:
    """The buttons a user clicks on the jobs page: ▼ / ▲ move a queued job later / sooner, Delete removes it, Stop ends
    the running one (it saves)."""
    base, settings = server
    long = _post_form(base, "/api/jobs/form", {"name": "longrun", "steps": "100000", "save_every": "100000",
                                               "sample_every": "100000", "resolution": "64"})["id"]
    first, second = (_post_form(base, "/api/datasets/demo/job", {"kind": "prep"})["id"] for _ in range(2))
    visit(page, base + "/", "jobs (queue)")
    page.wait_for_selector(f"tr.status-running[data-id='{long}']", timeout=120_000)
    assert _queued_order(page) == [first, second]
    page.locator(f"tr[data-id='{first}'] button[title='run later']").click()
    page.wait_for_function(f"() => [...document.querySelectorAll('table.queue tr.status-queued')].map(r => Number(r.dataset.id)).join() === '{second},{first}'")
    shot(page, "11-queue-reordered")
    page.locator(f"tr[data-id='{first}'] button[title='run sooner']").click()
    page.wait_for_function(f"() => [...document.querySelectorAll('table.queue tr.status-queued')].map(r => Number(r.dataset.id)).join() === '{first},{second}'")
    for job in (first, second):  # the two waiting jobs are not needed further
        page.locator(f"tr[data-id='{job}'] button", has_text="Delete").click()
        page.wait_for_selector(f"tr[data-id='{job}']", state="detached")
    losses = settings.output / "longrun" / "loss.csv"
    wait_for(lambda: losses.is_file() and len(losses.read_text().splitlines()) > 1, what="the long run's first step")
    page.locator(f"tr[data-id='{long}'] button", has_text="Stop").click()
    page.wait_for_selector(f"tr.status-stopped[data-id='{long}']", timeout=120_000)
    row = json.load(urllib.request.urlopen(f"{base}/api/jobs/{long}"))
    assert (row["status"], row["exit_code"]) == ("stopped", 143), row
    assert list((settings.output / "longrun").glob("longrun*.safetensors")), "an interrupted run saves before it exits"
    shot(page, "12-queue-stopped")


def test_the_caption_button_captions_the_images_without_one(server: tuple[str, Any], page: Any) -> None:
    """The dataset page's caption form queues the caption job (tiny BLIP, offline); it writes the missing caption only."""
    base, settings = server
    folder = settings.datasets / "demo"
    (folder / "002_tree.txt").unlink()
    kept = (folder / "003_boat.txt").read_text()
    visit(page, base + "/datasets/demo", "dataset (caption)")
    page.fill("input[name=model]", "tiny:blip")
    page.fill("input[name=prefix]", "warmstyle")
    page.click("text=Caption the images without a caption")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    page.wait_for_selector("#status.done", timeout=180_000)
    shot(page, "13-caption-job-done")
    caption = (folder / "002_tree.txt").read_text().strip()
    assert caption.startswith("warmstyle") and len(caption) > len("warmstyle"), caption
    assert (folder / "003_boat.txt").read_text() == kept  # overwrite: false keeps the others
    visit(page, base + "/datasets/demo", "dataset (captioned)")
    assert page.input_value("textarea[data-image='002_tree.png']").strip() == caption
    shot(page, "14-dataset-captioned")
