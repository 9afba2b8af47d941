"""Jobs: the queue page, the new-job form and editor, queueing, queue actions, and the watch page's events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from toolkit.train import requests as run_requests
from toolkit.errors import EaselError
from ui import form
from ui.configs import check_draft, check_text, dry_run, facts
from ui.events import job_events
from ui.files import file_url
from ui.runs import in_use_by

router = APIRouter()
TEMPLATE = Path(__file__).resolve().parent.parent / "config" / "examples" / "quickstart.yaml"


def ui_of(request: Request) -> Any:
    return request.app.state.ui


def _error(message: str, status: int = 400, **extra: Any) -> JSONResponse:
    return JSONResponse({"ok": False, "message": message, **extra}, status_code=status)


def default_yaml(ui: Any) -> str:
    """The quickstart, pointed at this UI's output and datasets folders."""
    text = TEMPLATE.read_text(encoding="utf-8")
    settings = ui.settings
    return form.set_keys(text, {form.PROCESS + ("training_folder",): settings.relative(settings.output),
                                form.PROCESS + ("datasets", 0, "folder_path"): settings.relative(settings.datasets / "demo")})


def _free_name(ui: Any, name: str, folder: Path | None) -> str:
    taken = {row.name for row in ui.store.all()}
    for number in range(2, 1000):
        candidate = f"{name}-{number}"
        if candidate not in taken and not (folder is not None and (folder / candidate).exists()):
            return candidate
    return f"{name}-{int(time.time())}"


def _draft_from(ui: Any, job_id: int, more: bool) -> tuple[str, str]:
    """(YAML, note) for cloning a job, or for continuing it with more steps (same name: same run folder)."""
    row = ui.store.get(job_id)
    if row is None:
        raise EaselError(f"there is no job {job_id}.")
    text = ui.store.config_path(job_id).read_text(encoding="utf-8")
    if more:
        total = row.total_steps or 0
        text = form.set_keys(text, {form.PROCESS + ("train", "steps"): total * 2 or 1000})
        return text, (f"Continues '{row.name}' from its last save (it trained to step {total}); raise the steps as you like.")
    folder = Path(row.run_dir).parent if row.run_dir else None
    return form.set_keys(text, {("config", "name"): _free_name(ui, row.name, folder)}), f"A copy of job {job_id} ({row.name})."


@router.get("/", response_class=HTMLResponse)
def queue_page(request: Request) -> Any:
    ui = ui_of(request)
    return ui.page(request, "queue.html", jobs=ui.store.all(), title="Jobs")


@router.get("/partials/queue", response_class=HTMLResponse)
def queue_partial(request: Request) -> Any:
    ui = ui_of(request)
    return ui.page(request, "_queue_table.html", jobs=ui.store.all())


@router.get("/jobs/new", response_class=HTMLResponse)
def new_job_page(request: Request, source: int | None = None, more: bool = False) -> Any:
    ui = ui_of(request)
    note = ""
    text = default_yaml(ui)
    if source is not None:
        try:
            text, note = _draft_from(ui, source, more)
        except EaselError as err:
            note = str(err)
    fields = form.fields(ui.registry)
    values = form.from_yaml(text, fields)
    datasets = sorted(p.name for p in ui.settings.datasets.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if ui.settings.datasets.is_dir() else []
    return ui.page(request, "new_job.html", title="New job", fields=fields, values=values, yaml_text=text, note=note,
                   dataset_paths=[ui.settings.relative(ui.settings.datasets / d) for d in datasets])


@router.post("/api/form/to-yaml")
async def api_to_yaml(request: Request) -> Any:
    body = await request.json()
    try:
        text = form.to_yaml(body.get("values", {}), body.get("yaml", ""), form.fields(ui_of(request).registry))
    except ValueError as err:
        return _error(f"the YAML does not parse ({err}); fix it in the editor first.")
    return {"ok": True, "yaml": text}


@router.post("/api/form/from-yaml")
async def api_from_yaml(request: Request) -> Any:
    body = await request.json()
    try:
        values = form.from_yaml(body.get("yaml", ""), form.fields(ui_of(request).registry))
    except ValueError as err:
        return _error(f"the YAML does not parse ({err}).")
    return {"ok": True, "values": values}


@router.post("/api/validate")
async def api_validate(request: Request) -> Any:
    ui = ui_of(request)
    body = await request.json()
    check = check_draft(body.get("yaml", ""), ui.registry, ui.settings.state)
    return {"ok": check.ok, "message": check.message, "issues": check.issues}


def queue_text(ui: Any, text: str) -> JSONResponse:
    """Validate (the loader, then ``run.py --dry-run`` on the very file) and queue; nothing is queued on an error."""
    pending = ui.settings.state / "drafts" / f"pending-{time.time_ns()}.yaml"
    try:
        check = check_text(text, ui.registry, pending)
        if not check.ok:
            return _error(check.message, issues=check.issues)
        job = facts(check.loaded)
        passed, output = dry_run(pending, ui.settings.root)
        if not passed:
            return _error(output)
    except EaselError as err:
        return _error(f"error: {err}")
    finally:
        pending.unlink(missing_ok=True)
    run_dir = str(ui.settings.root / job.run_dir) if job.run_dir else None  # jobs run in root, as run.py would there
    job_id = ui.store.add(name=job.name, kind=job.kind, device=job.device, config_text=text, run_dir=run_dir,
                          total_steps=job.total_steps)
    return JSONResponse({"ok": True, "id": job_id, "url": f"/jobs/{job_id}"})


@router.post("/api/jobs")
async def api_queue(request: Request) -> Any:
    body = await request.json()
    return queue_text(ui_of(request), body.get("yaml", ""))


@router.post("/api/jobs/form")
async def api_queue_form(request: Request) -> Any:
    """Queue from the form's fields alone (written into the default YAML, or into ``yaml`` when sent)."""
    ui = ui_of(request)
    values = dict(await request.form())
    base = str(values.pop("yaml", "") or default_yaml(ui))
    try:
        text = form.to_yaml(values, base, form.fields(ui.registry))
    except ValueError as err:
        return _error(f"the YAML does not parse ({err}).")
    return queue_text(ui, text)


@router.get("/api/jobs")
def api_jobs(request: Request) -> Any:
    return [row.as_dict() for row in ui_of(request).store.all()]


@router.get("/api/jobs/{job_id}")
def api_job(request: Request, job_id: int) -> Any:
    row = ui_of(request).store.get(job_id)
    return row.as_dict() if row else _error(f"there is no job {job_id}.", 404)


@router.post("/api/jobs/{job_id}/{action}")
def api_action(request: Request, job_id: int, action: str, offset: int = 0) -> Any:
    """stop | save | sample | move (``offset``) | delete."""
    ui = ui_of(request)
    row = ui.store.get(job_id)
    if row is None:
        return _error(f"there is no job {job_id}.", 404)
    if action == "stop":
        status = ui.store.request_stop(job_id)
        return {"ok": True, "status": status} if status else _error(f"job {job_id} is {row.status}; only queued or running jobs stop.", 409)
    if action in run_requests.REQUESTS:
        if row.status != "running" or not row.run_dir:
            return _error(f"'{action} now' needs a running training job; job {job_id} is {row.status}.", 409)
        run_requests.request(Path(row.run_dir), action)
        return {"ok": True, "message": f"asked for '{action} now': it happens after the current step."}
    if action == "move":
        return {"ok": True} if ui.store.move(job_id, offset) else _error("only queued jobs can be moved.", 409)
    if action == "delete":
        return {"ok": True} if ui.store.delete(job_id) else _error("a running job cannot be deleted; stop it first.", 409)
    return _error(f"unknown action '{action}'.", 404)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def watch_page(request: Request, job_id: int) -> Any:
    ui = ui_of(request)
    row = ui.store.get(job_id)
    if row is None:
        return HTMLResponse(f"there is no job {job_id}", status_code=404)
    config_path = ui.store.config_path(job_id)
    text = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    check = check_text(text, ui.registry, ui.settings.state / "drafts" / f"watch-{job_id}.yaml")
    prompts = facts(check.loaded).prompts if check.ok else []
    run_url = file_url(ui.settings, Path(row.run_dir)) if row.run_dir else None
    return ui.page(request, "watch.html", title=f"Job {job_id}: {row.name}", job=row, prompts=prompts, yaml_text=text,
                   run_url=run_url, training=row.run_dir is not None, holder=in_use_by(row.run_dir),
                   run_folder=ui.settings.relative(Path(row.run_dir)) if row.run_dir else None)


@router.get("/api/jobs/{job_id}/events")
async def api_events(request: Request, job_id: int) -> Any:
    ui = ui_of(request)
    if ui.store.get(job_id) is None:
        return _error(f"there is no job {job_id}.", 404)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(job_events(ui, job_id, request), media_type="text/event-stream", headers=headers)
