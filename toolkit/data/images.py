"""Reading user images safely: EXIF orientation, any mode to RGB, bad files reported with a reason."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_PIXELS = 8192 * 8192
"""Larger images are refused as possible decompression bombs."""


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


def load_image(path: Path) -> Image.Image:
    """Open, fully decode, orient by EXIF and convert to RGB; raise BadImage with a reason."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage(path, "empty file")
    except OSError as err:
        raise BadImage(path, "unreadable", str(err)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise BadImage(path, "too large (decompression bomb?)", f"{opened.width}x{opened.height}")
                opened.load()
                image = ImageOps.exif_transpose(opened)
                return to_rgb(image)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(path, "too large (decompression bomb?)", str(err)) from None
    except Image.UnidentifiedImageError:
        raise BadImage(path, "not an image") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise BadImage(path, reason, str(err)) from None
