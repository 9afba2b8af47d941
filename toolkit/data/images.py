"""Reading user images safely: EXIF orientation, any mode to RGB, bad files reported with a reason."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_PIXELS = 8192 * 8192
"""Larger images are refused as possible decompression bombs. It is below PIL's own limit, so PIL's
DecompressionBombWarning never fires for an accepted image; the process-global warnings filters are
left alone because images are read from several threads."""
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".psd", ".ico")
"""Image files that are reported as skipped (instead of silently ignored) when found in a dataset."""
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that rotate by 90 degrees (width and height swap)."""


class BadImage(Exception):
    """An image that cannot be used; ``reason`` is a short, countable label."""

    def __init__(self, path: Path, reason: str, detail: str = ""):
        super().__init__(f"{path}: {reason}{': ' + detail if detail else ''}")
        self.path = path
        self.reason = reason


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited over white, 16-bit is scaled to 8-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "I" or array.max() > 255 else 255.0
        image = Image.fromarray((array / peak * 255.0).clip(0, 255).astype("uint8"), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageHeader:
    """What a cheap look at an image file tells: its format and its size once EXIF-oriented."""

    format: str
    width: int
    height: int


def _check_nonempty(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadImage(path, "unreadable", str(err)) from None
    if size == 0:
        raise BadImage(path, "empty file")
    return size


def _bad_image(path: Path, err: Exception) -> BadImage:
    """Map PIL's exceptions to a short reason."""
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BadImage(path, "too large (decompression bomb?)", str(err))
    if isinstance(err, Image.UnidentifiedImageError):
        return BadImage(path, "not an image")
    text = str(err).lower()
    reason = "truncated" if "truncated" in text or "could not create decoder" in text else "unreadable"
    return BadImage(path, reason, str(err))


def _check_pixels(path: Path, opened: Image.Image) -> None:
    if opened.width * opened.height > MAX_PIXELS:
        raise BadImage(path, "too large (decompression bomb?)", f"{opened.width}x{opened.height}")


def _check_complete(path: Path, fmt: str, file_size: int) -> None:
    """Detect truncation without a full decode where the format allows it."""
    if fmt == "WEBP":
        with path.open("rb") as handle:
            riff = handle.read(12)
        if len(riff) < 12 or struct.unpack("<I", riff[4:8])[0] + 8 > file_size:
            raise BadImage(path, "truncated", "RIFF size is larger than the file")
        return
    with Image.open(path) as opened:
        if fmt == "JPEG":
            opened.draft("RGB", (max(1, opened.width // 8), max(1, opened.height // 8)))
            opened.load()
        elif fmt == "PNG":
            opened.verify()
        else:
            opened.load()


def _orientation(opened: Image.Image) -> int | None:
    """The EXIF orientation, read without decoding pixels (PIL's PNG ``getexif`` would decode them)."""
    if opened.format == "PNG":
        raw = opened.info.get("exif")
        if not raw:
            return None
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(0x0112)
    return opened.getexif().get(0x0112)


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) as shown, after EXIF rotation, from the header alone (no checks, no decoding)."""
    with Image.open(path) as opened:
        width, height = opened.size
        return (height, width) if _orientation(opened) in _SWAPPED_ORIENTATIONS else (width, height)


def probe_image(path: Path) -> ImageHeader:
    """Check a file without a full decode: header, size limit and completeness; raise BadImage.

    JPEGs are decoded at 1/8 scale (this reads the whole stream, so truncation shows), PNGs have
    their chunk checksums verified, WebPs their RIFF length compared with the file size, other
    formats are decoded. Corruption inside compressed data can still slip through and is then
    reported when the image is fully decoded. A PNG whose EXIF chunk follows its pixel data is
    measured unrotated (the loader then finds the size changed and reports it).
    """
    path = Path(path)
    file_size = _check_nonempty(path)
    try:
        with Image.open(path) as opened:
            _check_pixels(path, opened)
            fmt, width, height = opened.format or "", opened.width, opened.height
            orientation = _orientation(opened)
        _check_complete(path, fmt, file_size)
    except BadImage:
        raise
    except Exception as err:  # noqa: BLE001 - damaged files make PIL raise many kinds of errors
        raise _bad_image(path, err) from None
    if orientation in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(fmt, width, height)


def load_image(path: Path, *, at_least: tuple[int, int] | None = None) -> Image.Image:
    """Open, fully decode, orient by EXIF and convert to RGB; raise BadImage with a reason.

    Args:
        path: the image file.
        at_least: (width, height) the caller will resize down to; JPEGs may then be decoded at a
            reduced scale (never below this size), which is much faster for large photos.
    """
    path = Path(path)
    _check_nonempty(path)
    try:
        with Image.open(path) as opened:
            _check_pixels(path, opened)
            if at_least is not None and opened.format == "JPEG":
                want = at_least
                if _orientation(opened) in _SWAPPED_ORIENTATIONS:
                    want = (at_least[1], at_least[0])
                opened.draft("RGB", want)
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return to_rgb(image)
    except BadImage:
        raise
    except Exception as err:  # noqa: BLE001 - damaged files make PIL raise many kinds of errors
        raise _bad_image(path, err) from None
