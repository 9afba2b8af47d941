"""Generate: a form that becomes a ``job: generate`` config, run by the long-lived generate worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from toolkit.errors import EaselError
from toolkit.output import dump_yaml
from toolkit.paths import under
from ui.configs import check_text
from ui.files import file_url

router = APIRouter()
DEFAULT_MODEL = ("tiny:zimage", "zimage:turbo")


def ui_of(request: Request) -> Any:
    return request.app.state.ui


def loras(output: Path) -> list[str]:
    """Every LoRA file under the output folder (hidden folders left out), relative to it."""
    found = []
    for path in sorted(output.rglob("*.safetensors")) if output.is_dir() else []:
        relative = path.relative_to(output)
        if not any(part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return found


def samplers(registry: Any) -> dict[str, list[str]]:
    """Architecture name -> its samplers (the first is its default)."""
    out = {}
    for name in registry.arch_names():
        spec = registry.arch(name).spec
        out[name] = [spec.default_sampler, *(s for s in spec.samplers if s != spec.default_sampler)]
    return out


@router.get("/generate", response_class=HTMLResponse)
def generate_page(request: Request) -> Any:
    ui = ui_of(request)
    return ui.page(request, "generate.html", title="Generate", loras=loras(ui.settings.output), samplers=samplers(ui.registry),
                   model=DEFAULT_MODEL[0], arch=DEFAULT_MODEL[1])


def _number(form: Any, key: str, kind: type, default: Any = None) -> Any:
    raw = str(form.get(key, "") or "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise EaselError(f"{key}: '{raw}' is not a number.") from None


def generate_config(ui: Any, form: Any, init: Path | None) -> str:
    """The generate job of one form submission (``lora:<file>`` fields carry the mixer's weights)."""
    settings = ui.settings
    mixer = [{"path": settings.relative(under(settings.output, key[5:], what="LoRA")), "weight": _number(form, key, float)}
             for key, value in form.multi_items() if key.startswith("lora:") and str(value).strip() not in ("", "0")]
    generate: dict[str, Any] = {
        "prompts": [str(form.get("prompt", ""))], "neg": str(form.get("negative", "")),
        "width": _number(form, "width", int), "height": _number(form, "height", int),
        "sample_steps": _number(form, "steps", int), "guidance_scale": _number(form, "guidance", float),
        "seed": _number(form, "seed", int, -1), "sampler": str(form.get("sampler", "")).strip() or None,
        "loras": mixer, "lora_dirs": [settings.relative(settings.output)],
        "compile": True if form.get("compile") == "true" else None,
    }
    mode = str(form.get("compile_mode", "") or "default")
    if generate["compile"] and mode != "default":  # a mode without the box would be a config error; the box decides
        generate["compile_mode"] = mode
    if init is not None:
        generate["init_images"] = settings.relative(init)
        generate["strength"] = _number(form, "strength", float, 0.6)
    process = {"type": "to_folder", "output_folder": settings.relative(settings.output / "generate"),
               "device": settings.generate_device,
               "model": {"name_or_path": str(form.get("model", "")).strip(), "arch": str(form.get("arch", "")).strip(),
                         **({"vae_tiling": True} if form.get("vae_tiling") == "true" else {})},
               "generate": {key: value for key, value in generate.items() if value is not None}}
    return dump_yaml({"job": "generate", "config": {"name": "ui-generate", "process": [process]}})


async def _store_init(ui: Any, upload: UploadFile | None) -> Path | None:
    """Keep an img2img input under ``<output>/generate/_inputs`` (only an image is accepted)."""
    from ui.datasets import upload as store_upload

    if upload is None or not upload.filename:
        return None
    folder = ui.settings.output / "generate" / "_inputs"
    folder.mkdir(parents=True, exist_ok=True)
    name = upload.filename
    if name.lower().endswith(".txt"):
        raise EaselError(f"'{name}' is not an image.")
    return store_upload(folder, f"{time.strftime('%Y%m%d-%H%M%S')}_{Path(name).name}", await upload.read())


@router.post("/api/generate")
async def api_generate(request: Request) -> Any:
    """Validate the form's config like the CLI, run it in the generate worker, return the images and their metadata."""
    import asyncio

    from toolkit.sampling.pngmeta import read_parameters

    ui = ui_of(request)
    form = await request.form()
    started = time.perf_counter()
    try:
        init = await _store_init(ui, form.get("init_image") if hasattr(form.get("init_image"), "read") else None)
        text = generate_config(ui, form, init)
    except EaselError as err:
        return JSONResponse({"ok": False, "message": f"error: {err}"}, status_code=400)
    config = ui.settings.state / "generate" / f"{time.time_ns()}.yaml"
    check = check_text(text, ui.registry, config)
    if not check.ok:
        return JSONResponse({"ok": False, "message": check.message, "yaml": text}, status_code=400)
    try:
        result = await asyncio.to_thread(ui.generator.run, config)
    finally:
        config.unlink(missing_ok=True)
    if not result.get("ok"):
        return JSONResponse({"ok": False, "message": result.get("error", "generation failed"), "yaml": text}, status_code=400)
    images = [{"url": file_url(ui.settings, Path(p)), "name": Path(p).name, "parameters": read_parameters(Path(p)) or ""}
              for p in result["images"]]
    return {"ok": True, "images": images, "loads": result.get("loads"), "seconds": round(time.perf_counter() - started, 2),
            "yaml": text}
