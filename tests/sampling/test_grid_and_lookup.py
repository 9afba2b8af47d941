"""Contact sheets, LoRA lookup by name, and size fitting."""

from pathlib import Path

import pytest
from PIL import Image

from toolkit.errors import EaselError
from toolkit.sampling.grid import distinct_labels, label_lines, make_grid, read_grid_metadata, save_grid, wrap_text
from toolkit.sampling.lookup import fit_aspect, index_loras, resolve_lora, round_to


def test_grid_layout_and_content() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = [Image.new("RGB", (32, 24), c) for c in colours]
    sheet = make_grid(images, columns=3, padding=2)
    assert sheet.size == (3 * 34 + 2, 2 * 26 + 2)
    assert sheet.getpixel((2 + 16, 2 + 12)) == colours[0]
    assert sheet.getpixel((2 + 34 + 16, 2 + 26 + 12)) == colours[4]
    assert sheet.getpixel((2 + 2 * 34 + 16, 2 + 26 + 12)) == (255, 255, 255)


def test_grid_labels_add_room_and_ink() -> None:
    images = [Image.new("RGB", (64, 64), (0, 0, 0))] * 2
    plain, labelled = make_grid(images), make_grid(images, labels=["seed 1: a cat", "seed 2: a dog"])
    assert labelled.width == plain.width and labelled.height > plain.height
    strip = labelled.crop((0, 70, labelled.width, labelled.height)).convert("L")
    assert strip.getextrema()[0] < 128
    with pytest.raises(ValueError):
        make_grid(images, labels=["one"])


QUICKSTART = ["warmstyle a painting of a house", "warmstyle a painting of a boat", "warmstyle a painting of a tree",
              "warmstyle a painting of a cat"]


def test_labels_show_what_sets_the_prompts_apart() -> None:
    """The quickstart's four 64 px previews were all labelled 'warmstyle / a / painting'."""
    assert label_lines(QUICKSTART, 64) == [["... house"], ["... boat"], ["... tree"], ["... cat"]]
    whole = label_lines(QUICKSTART, 64, abbreviate=False)
    assert [" ".join(lines) for lines in whole] == QUICKSTART, "wrapped by pixels, nothing is cut"
    assert distinct_labels(["a cat", "a cat in a hat"]) == ["... cat", "... cat in a hat"], "one word of each stays"
    assert distinct_labels(["a cat", "a cat"]) == ["a cat", "a cat"] and distinct_labels(["a cat"]) == ["a cat"]
    assert distinct_labels(["1: a cat", "2: a cat"]) == ["1: a cat", "2: a cat"]


def test_wrapping_fits_the_cell_and_marks_what_is_cut() -> None:
    from PIL import ImageFont

    font = ImageFont.load_default()
    lines = wrap_text("supercalifragilisticexpialidocious and a long tail of words that cannot fit", 64, font, 3)
    assert len(lines) == 3 and lines[-1].endswith("...") and all(font.getlength(line) <= 64 for line in lines)
    assert "".join(lines[:2]).startswith("supercalifragilistic")


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp"])
def test_saved_grids_keep_the_full_labels(tmp_path: Path, suffix: str) -> None:
    from toolkit.train.sampling import save_previews

    images = [Image.new("RGB", (64, 64), (40 * i, 80, 90)) for i in range(4)]
    save_previews(images, tmp_path, 7, "jpeg" if suffix == "jpg" else suffix, QUICKSTART)
    assert read_grid_metadata(tmp_path / f"000000007_grid.{suffix}") == {"labels": QUICKSTART}
    assert read_grid_metadata(tmp_path / f"000000007_00.{suffix}") is None
    save_grid(make_grid(images), tmp_path / "ünïcode.png", {"labels": ["é 🎨"]})
    assert read_grid_metadata(tmp_path / "ünïcode.png") == {"labels": ["é 🎨"]}


def test_lora_index_and_resolution(tmp_path: Path) -> None:
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "watercolor.safetensors").write_bytes(b"x")
    (tmp_path / "detail.safetensors").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    index = index_loras([str(tmp_path)])
    assert set(index) == {"watercolor", "styles/watercolor", "detail"}
    assert resolve_lora("watercolor", index, [str(tmp_path)], "here") == tmp_path / "styles" / "watercolor.safetensors"
    assert resolve_lora("detail.safetensors", index, [str(tmp_path)], "here") == tmp_path / "detail.safetensors"
    direct = tmp_path / "detail.safetensors"
    assert resolve_lora(str(direct), {}, [], "here") == direct
    with pytest.raises(EaselError, match=r"'watercolr' .* Found: detail, watercolor"):
        resolve_lora("watercolr", index, [str(tmp_path)], "prompt 'x'")
    with pytest.raises(EaselError, match="not a folder"):
        index_loras([str(tmp_path / "nope")])


def test_sizes() -> None:
    assert round_to(100, 64) == 128 and round_to(10, 64) == 64 and round_to(1024, 16) == 1024
    assert fit_aspect((1000, 500), 512 * 512, 64) == (704, 384)
    assert fit_aspect((300, 400), 1024 * 1024, 16) == (880, 1184)
