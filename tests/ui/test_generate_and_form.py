"""Generation through the long-lived worker (two LoRAs, img2img, one model load), and the form <-> YAML round trip."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui.conftest import copy_loras
from ui import form

pytestmark = pytest.mark.slow


def _form(**extra: Any) -> dict[str, str]:
    return {"model": "tiny:zimage", "arch": "zimage:turbo", "prompt": "a painting of a house", "width": "64",
            "height": "64", "steps": "2", "guidance": "1", "seed": "5", "sampler": "flowmatch", **extra}


def _pixels(client: Any, url: str) -> bytes:
    with Image.open(io.BytesIO(client.get(url).content)) as image:
        return image.convert("RGB").tobytes()


def test_generate_with_two_loras_keeps_the_model_loaded(quiet: Any, settings: Any, two_loras: Path) -> None:
    copy_loras(two_loras, settings.output)
    page = quiet.get("/generate").text
    assert "warm/warm.safetensors" in page and "cool/cool.safetensors" in page
    mixed = quiet.post("/api/generate", data=_form(**{"lora:warm/warm.safetensors": "0.8", "prompt": "a house <lora:cool:-0.5>"}))
    body = mixed.json()
    assert body["ok"], body
    image = body["images"][0]
    assert "<lora:warm:0.8> <lora:cool:-0.5>" in image["parameters"] and "Seed: 5" in image["parameters"]
    assert (settings.output / "generate" / image["name"]).is_file()  # saved as the generate job saves
    plain = quiet.post("/api/generate", data=_form(prompt="a house")).json()
    assert plain["loads"] == 1  # the second request used the model the first one loaded
    assert _pixels(quiet, plain["images"][0]["url"]) != _pixels(quiet, image["url"])
    init = io.BytesIO()
    Image.new("RGB", (96, 64), (20, 200, 40)).save(init, format="PNG")
    img2img = quiet.post("/api/generate", data=_form(strength="0.3"), files={"init_image": ("green.png", init.getvalue(), "image/png")})
    result = img2img.json()
    assert result["ok"] and "Denoising strength: 0.3" in result["images"][0]["parameters"]
    with Image.open(settings.output / "generate" / result["images"][0]["name"]) as made:
        assert made.width > made.height  # the input's aspect ratio


def test_generate_errors_are_the_cli_messages(quiet: Any) -> None:
    answer = quiet.post("/api/generate", data=_form(sampler="euler_a"))
    assert answer.status_code == 400 and "sampler 'euler_a' does not fit architecture" in answer.json()["message"]
    missing = quiet.post("/api/generate", data=_form(prompt="x <lora:nowhere:1>")).json()
    assert not missing["ok"] and "LoRA 'nowhere' is not a file and not found in lora_dirs" in missing["message"]
    not_image = quiet.post("/api/generate", data=_form(), files={"init_image": ("a.txt", b"hello", "text/plain")}).json()
    assert not not_image["ok"] and "is not an image" in not_image["message"]


def test_the_form_and_the_yaml_round_trip(registry: Any) -> None:
    fields = form.fields(registry)
    text = (Path(__file__).resolve().parents[2] / "config" / "examples" / "quickstart.yaml").read_text()
    values = form.from_yaml(text, fields)
    assert values["steps"] == "300" and values["resolution"] == "64" and values["arch"] == "zimage:turbo"
    assert form.from_yaml(form.to_yaml(values, text, fields), fields) == values
    assert form.to_yaml(values, text, fields) == text  # nothing changed: not a byte moved (comments kept)
    edited = form.to_yaml({**values, "steps": "50", "resolution": "512, 768", "quantize": True, "trigger": ""}, text, fields)
    again = form.from_yaml(edited, fields)
    assert (again["steps"], again["resolution"], again["quantize"], again["trigger"]) == ("50", "512, 768", True, "")
    assert "# A random model needs its output layers adapted too" in edited and "target_modules" in edited
    assert "trigger_word" not in edited  # an emptied field removes its key
    with pytest.raises(ValueError):
        form.from_yaml("config: [", fields)


def test_the_compile_box_asks_the_generate_job_to_compile(settings: Any) -> None:
    from types import SimpleNamespace

    from starlette.datastructures import FormData

    from toolkit.config.yaml_io import load_text
    from ui.routes_generate import generate_config

    def generate_block(**extra: str) -> dict[str, Any]:
        text = generate_config(SimpleNamespace(settings=settings), FormData(list(_form(**extra).items())), None)
        return load_text(text, "form")[0]["config"]["process"][0]["generate"]

    assert generate_block(compile="true")["compile"] is True
    assert "compile" not in generate_block() and "compile_mode" not in generate_block(compile="true")
    assert generate_block(compile="true", compile_mode="reduce-overhead")["compile_mode"] == "reduce-overhead"
    assert "compile_mode" not in generate_block(compile_mode="reduce-overhead")  # without the box, no mode


def test_the_vae_tiling_box_sets_the_models_tiling(settings: Any) -> None:
    from types import SimpleNamespace

    from starlette.datastructures import FormData

    from toolkit.config.yaml_io import load_text
    from ui.routes_generate import generate_config

    def model_block(**extra: str) -> dict[str, Any]:
        text = generate_config(SimpleNamespace(settings=settings), FormData(list(_form(**extra).items())), None)
        return load_text(text, "form")[0]["config"]["process"][0]["model"]

    assert model_block(vae_tiling="true")["vae_tiling"] is True
    assert "vae_tiling" not in model_block()
