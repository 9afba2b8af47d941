"""Datasets (folders, uploads, captions, trigger words, skipped files, caption and prep jobs) and file serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse

from toolkit.errors import EaselError
from ui import datasets
from ui.files import file_url, served_path
from toolkit.output import dump_yaml as dump

router = APIRouter()
EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"


def ui_of(request: Request) -> Any:
    return request.app.state.ui


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"ok": False, "message": message}, status_code=status)


@router.get("/files/{root}/{relative:path}")
def serve_file(request: Request, root: str, relative: str) -> Any:
    path = served_path(ui_of(request).settings, root, relative)
    if path is None:
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, filename=path.name if path.suffix == ".safetensors" else None)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request) -> Any:
    ui = ui_of(request)
    return ui.page(request, "datasets.html", title="Datasets", folders=datasets.folders(ui.settings.datasets))


@router.post("/api/datasets")
async def api_create(request: Request) -> Any:
    ui = ui_of(request)
    name = str((await request.form()).get("name", ""))
    try:
        datasets.create(ui.settings.datasets, name)
    except EaselError as err:
        return _error(str(err))
    return {"ok": True, "url": f"/datasets/{name}"}


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, name: str) -> Any:
    ui = ui_of(request)
    try:
        folder = datasets.folder_of(ui.settings.datasets, name)
    except EaselError as err:
        return HTMLResponse(str(err), status_code=404)
    items = [(item, file_url(ui.settings, folder / item.path)) for item in datasets.items(folder)]
    return ui.page(request, "dataset.html", title=f"Dataset {name}", name=name, items=items,
                   skipped=datasets.skipped(folder), folder=ui.settings.relative(folder))


@router.post("/api/datasets/{name}/upload")
async def api_upload(request: Request, name: str, files: list[UploadFile]) -> Any:
    """Store each uploaded file; the response lists what was stored and what was refused, with the reason."""
    ui = ui_of(request)
    try:
        folder = datasets.folder_of(ui.settings.datasets, name)
    except EaselError as err:
        return _error(str(err), 404)
    stored, refused = [], []
    for upload in files:
        try:
            datasets.upload(folder, upload.filename or "", await upload.read())
            stored.append(upload.filename)
        except EaselError as err:
            refused.append({"name": upload.filename, "message": str(err)})
    return JSONResponse({"ok": not refused, "stored": stored, "refused": refused}, status_code=200 if not refused else 400)


@router.post("/api/datasets/{name}/caption")
async def api_caption(request: Request, name: str) -> Any:
    ui = ui_of(request)
    body = await request.form()
    try:
        folder = datasets.folder_of(ui.settings.datasets, name)
        datasets.save_caption(folder, str(body.get("image", "")), str(body.get("caption", "")))
    except EaselError as err:
        return _error(str(err))
    return {"ok": True, "message": "saved"}


@router.post("/api/datasets/{name}/trigger")
async def api_trigger(request: Request, name: str) -> Any:
    ui = ui_of(request)
    body = await request.form()
    try:
        folder = datasets.folder_of(ui.settings.datasets, name)
        changed = datasets.bulk_trigger(folder, str(body.get("mode", "add")), str(body.get("word", "")), str(body.get("old", "")))
    except EaselError as err:
        return _error(str(err))
    return {"ok": True, "changed": changed}


def caption_config(ui: Any, folder: Path, model: str, prefix: str, name: str) -> str:
    """A caption job on ``folder`` from the BLIP example (its other settings kept; ``prefix``: a trigger word)."""
    from toolkit.config.yaml_io import read_file

    data, _, _ = read_file(EXAMPLES / "caption_blip.yaml")
    data["config"]["name"] = name
    process = data["config"]["process"][0]
    process["folder_path"] = ui.settings.relative(folder)
    process["model"] = model or process["model"]
    process["prefix"] = prefix or None
    return dump({**data, "config": {**data["config"], "process": [{k: v for k, v in process.items() if v is not None}]}})


def prep_config(ui: Any, folder: Path, name: str) -> str:
    """A dataset job on ``folder``: filter, then dedupe, written to ``<folder>_prepared`` beside it."""
    out = folder.parent / f"{folder.name}_prepared"
    return dump({"job": "dataset", "config": {"name": name, "process": [
        {"type": "filter", "input_folder": ui.settings.relative(folder), "min_size": 64},
        {"type": "dedupe", "output_folder": ui.settings.relative(out)}]}})


@router.post("/api/datasets/{name}/job")
async def api_dataset_job(request: Request, name: str) -> Any:
    """Queue the caption job (``kind=caption``, optional ``model``) or the prep job (``kind=prep``) on the folder."""
    from ui.routes_jobs import queue_text

    ui = ui_of(request)
    body = await request.form()
    try:
        folder = datasets.folder_of(ui.settings.datasets, name)
    except EaselError as err:
        return _error(str(err), 404)
    kind = str(body.get("kind", ""))
    if kind == "caption":
        text = caption_config(ui, folder, str(body.get("model", "")).strip(), str(body.get("prefix", "")).strip(), f"caption-{name}")
    elif kind == "prep":
        text = prep_config(ui, folder, f"prep-{name}")
    else:
        return _error(f"unknown dataset job '{kind}'; use caption or prep.")
    return queue_text(ui, text)
