"""Generation through the long-lived worker (two LoRAs, img2img, one model load), and the form <-> YAML round trip."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ui import form

pytestmark = pytest.mark.slow


def save_two_loras(registry: Any, output: Path) -> None:
    """Random LoRAs for the tiny Z-Image model in two run folders of ``output``: warm/warm.safetensors, cool/cool.safetensors."""
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter
    from toolkit.testing.tiny import save_random_lora

    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), registry, device="cpu", dtype="fp32")
    for seed, name in ((1, "warm"), (2, "cool")):
        save_random_lora(adapter.pipeline(), output / name / f"{name}.safetensors", adapter.lora_targets(False), seed=seed)


def _form(**extra: Any) -> dict[str, str]:
    return {"model": "tiny:zimage", "arch": "zimage:turbo", "prompt": "a painting of a house", "width": "64",
            "height": "64", "steps": "2", "guidance": "1", "seed": "5", "sampler": "flowmatch", **extra}


def _pixels(client: Any, url: str) -> bytes:
    with Image.open(io.BytesIO(client.get(url).content)) as image:
        return image.convert("RGB").tobytes()


def test_generate_with_two_loras_keeps_the_model_loaded(client: Any, settings: Any, registry: Any) -> None:
    save_two_loras(registry, settings.output)
    page = client.get("/generate").text
    assert "warm/warm.safetensors" in page and "cool/cool.safetensors" in page
    mixed = client.post("/api/generate", data=_form(**{"lora:warm/warm.safetensors": "0.8", "prompt": "a house <lora:cool:-0.5>"}))
    body = mixed.json()
    assert body["ok"], body
    image = body["images"][0]
    assert "<lora:warm:0.8> <lora:cool:-0.5>" in image["parameters"] and "Seed: 5" in image["parameters"]
    assert (settings.output / "generate" / image["name"]).is_file()  # saved as the generate job saves
    plain = client.post("/api/generate", data=_form(prompt="a house")).json()
    assert plain["loads"] == 1  # the second request used the model the first one loaded
    assert _pixels(client, plain["images"][0]["url"]) != _pixels(client, image["url"])
    init = io.BytesIO()
    Image.new("RGB", (96, 64), (20, 200, 40)).save(init, format="PNG")
    img2img = client.post("/api/generate", data=_form(strength="0.3"), files={"init_image": ("green.png", init.getvalue(), "image/png")})
    result = img2img.json()
    assert result["ok"] and "Denoising strength: 0.3" in result["images"][0]["parameters"]
    with Image.open(settings.output / "generate" / result["images"][0]["name"]) as made:
        assert made.width > made.height  # the input's aspect ratio


def test_generate_errors_are_the_cli_messages(client: Any) -> None:
    answer = client.post("/api/generate", data=_form(sampler="euler_a"))
    assert answer.status_code == 400 and "sampler 'euler_a' does not fit architecture" in answer.json()["message"]
    missing = client.post("/api/generate", data=_form(prompt="x <lora:nowhere:1>")).json()
    assert not missing["ok"] and "LoRA 'nowhere' is not a file and not found in lora_dirs" in missing["message"]
    not_image = client.post("/api/generate", data=_form(), files={"init_image": ("a.txt", b"hello", "text/plain")}).json()
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
