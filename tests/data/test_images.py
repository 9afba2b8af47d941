"""Reading user images: every bad-file kind is reported with its reason, odd modes become RGB."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.helpers import write_image, write_png_header
from toolkit.data import images
from toolkit.data.images import BadImage, load_image, probe_image


def _noise(path: Path, fmt: str, size: tuple[int, int] = (96, 64)) -> Path:
    array = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _reason(path: Path, reader) -> str:
    with pytest.raises(BadImage) as caught:
        reader(path)
    return caught.value.reason


@pytest.mark.parametrize("reader", [probe_image, load_image])
def test_zero_byte_file(tmp_path, reader):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path, reader) == "empty file"


@pytest.mark.parametrize("reader", [probe_image, load_image])
def test_not_an_image(tmp_path, reader):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    assert _reason(path, reader) == "not an image"


@pytest.mark.parametrize("reader", [probe_image, load_image])
@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")])
def test_truncated_files(tmp_path, reader, fmt, ext):
    path = _truncate(_noise(tmp_path / f"cut.{ext}", fmt))
    assert _reason(path, reader) == "truncated"


@pytest.mark.parametrize("reader", [probe_image, load_image])
def test_decompression_bomb(tmp_path, monkeypatch, reader):
    path = write_image(tmp_path / "big.png", size=(64, 48))
    assert probe_image(path).width == 64
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 48 - 1)
    assert _reason(path, reader) == "too large (decompression bomb?)"


@pytest.mark.parametrize("reader", [probe_image, load_image])
@pytest.mark.parametrize("side", [10_000, 20_000])
def test_real_decompression_bomb_header(tmp_path, reader, side):
    """Above our limit but below PIL's (PIL only warns), and above PIL's (PIL raises): both refused."""
    path = write_png_header(tmp_path / "bomb.png", side, side)
    with pytest.warns(Image.DecompressionBombWarning) if side * side <= 2 * Image.MAX_IMAGE_PIXELS else nullcontext():
        assert _reason(path, reader) == "too large (decompression bomb?)"


def test_unreadable_file(tmp_path):
    missing = tmp_path / "gone.png"
    assert _reason(missing, probe_image) == "unreadable"


def test_probe_reads_size_of_good_files(tmp_path):
    for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")]:
        header = probe_image(_noise(tmp_path / f"ok.{ext}", fmt, (96, 64)))
        assert (header.format, header.width, header.height) == (fmt, 96, 64)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(path, quality=95)
    assert probe_image(path).width == 32
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    red, green, blue = image.getpixel((16, 12))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    path = tmp_path / "deep.png"
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 32768
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((6, 0)) == (255, 255, 255)
    assert abs(image.getpixel((1, 0))[0] - 128) <= 1


def test_palette_with_transparency_goes_over_white(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    for x in range(4):
        for y in range(8):
            image.putpixel((x, y), 0)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((6, 0)) == (0, 0, 255)


@pytest.mark.parametrize("mode,transparent,opaque", [
    ("RGBA", (10, 20, 30, 0), (10, 20, 30, 255)),
    ("LA", (40, 0), (40, 255)),
])
def test_alpha_goes_over_white(tmp_path, mode, transparent, opaque):
    path = tmp_path / f"alpha_{mode}.png"
    image = Image.new(mode, (4, 2), transparent)
    image.putpixel((3, 1), opaque)
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    expected = opaque[:3] if mode == "RGBA" else (40, 40, 40)
    assert loaded.getpixel((3, 1)) == expected


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_grayscale_becomes_rgb(tmp_path, fmt):
    path = tmp_path / f"gray.{fmt.lower()}"
    Image.new("L", (4, 4), 90).save(path, format=fmt, quality=100)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and all(abs(channel - 90) <= 2 for channel in loaded.getpixel((0, 0)))


def test_palette_without_transparency_and_bilevel_become_rgb(tmp_path):
    palette = Image.new("RGB", (4, 4), (10, 200, 30)).quantize(4)
    palette.save(tmp_path / "palette.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "bilevel.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    assert load_image(tmp_path / "palette.png").getpixel((1, 1)) == (10, 200, 30)
    assert load_image(tmp_path / "bilevel.png").getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation,size,red_at", [(3, (40, 20), (37, 10)), (6, (20, 40), (10, 2)),
                                                     (8, (20, 40), (10, 37))])
def test_exif_orientation_swaps_size_and_rotates(tmp_path, fmt, orientation, size, red_at):
    """A 40x20 blue image with a red left stripe, stored with an EXIF rotation."""
    path = tmp_path / f"rotated.{fmt.lower()}"
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format=fmt, exif=exif, quality=95)
    header = probe_image(path)
    assert (header.width, header.height) == size
    loaded = load_image(path)
    assert loaded.size == size
    assert loaded.getpixel(red_at)[0] > 200
    assert loaded.getpixel((size[0] - 1 - red_at[0], size[1] - 1 - red_at[1]))[2] > 200


def test_reduced_jpeg_decode_never_goes_below_the_request(tmp_path):
    path = _noise(tmp_path / "large.jpg", "JPEG", (800, 600))
    assert load_image(path).size == (800, 600)
    reduced = load_image(path, at_least=(190, 140))
    assert reduced.size == (200, 150)
    assert load_image(path, at_least=(201, 140)).size == (400, 300)
