"""A1111 'parameters' text: the exact format, quoting, parsing back, and storage in PNG/JPEG/WebP."""

from pathlib import Path

import pytest
from PIL import Image

from toolkit.sampling.pngmeta import format_parameters, parse_parameters, read_parameters, save_image

A1111_SAMPLE = """masterpiece, a cat
sitting on a chair
Negative prompt: blurry, lowres
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "style: 9f8e7d6c5b4a", Version: v1.10.1"""


def test_format_matches_a1111() -> None:
    text = format_parameters("a cat", "blurry", {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.0, "Seed": 1,
                                                 "Size": "512x512", "Model": "my-model", "Skipped": None})
    assert text == "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: my-model"
    assert format_parameters("a cat", "", {"Steps": 8, "CFG scale": 1.5, "Seed": 2}) == "a cat\nSteps: 8, CFG scale: 1.5, Seed: 2"


def test_values_with_commas_or_colons_are_quoted() -> None:
    text = format_parameters("p", "", {"Steps": 1, "Model": "a, b: c", "Seed": 3})
    assert 'Model: "a, b: c"' in text
    assert parse_parameters(text)[2]["Model"] == "a, b: c"


def test_parse_a1111_output() -> None:
    prompt, negative, params = parse_parameters(A1111_SAMPLE)
    assert prompt == "masterpiece, a cat\nsitting on a chair" and negative == "blurry, lowres"
    assert params["Sampler"] == "Euler a" and params["Size"] == "512x768" and params["Seed"] == "1234"
    assert params["Lora hashes"] == "style: 9f8e7d6c5b4a" and params["Version"] == "v1.10.1"


def test_text_without_parameters_line_is_all_prompt() -> None:
    assert parse_parameters("just a prompt\nsecond line") == ("just a prompt\nsecond line", "", {})


@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_stored_and_read_back(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"image.{ext}"
    save_image(Image.new("RGB", (8, 8), (200, 10, 10)), path, A1111_SAMPLE + " ünïcode ✓")
    assert read_parameters(path) == A1111_SAMPLE + " ünïcode ✓"
    with Image.open(path) as image:
        assert image.size == (8, 8)


def test_png_chunk_is_named_parameters_and_saving_is_deterministic(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    save_image(image, tmp_path / "a.png", "x\nSteps: 1, Seed: 2, Size: 8x8")
    save_image(image, tmp_path / "b.png", "x\nSteps: 1, Seed: 2, Size: 8x8")
    with Image.open(tmp_path / "a.png") as opened:
        assert opened.text["parameters"] == "x\nSteps: 1, Seed: 2, Size: 8x8"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    save_image(image, tmp_path / "c.tmp", None, ext="png")
    assert read_parameters(tmp_path / "c.tmp") is None
