"""Resizing for training sets: centered square crops, or aspect-keeping resizes to a longest side."""

from __future__ import annotations

from PIL import Image

RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def center_crop_square(image: Image.Image, size: int, resample: str = "lanczos") -> Image.Image:
    """The largest centered square of ``image``, resized to ``size`` x ``size``."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square if side == size else square.resize((size, size), RESAMPLE[resample])


def fit_max_side(image: Image.Image, size: int, resample: str = "lanczos", upscale: bool = False) -> Image.Image:
    """Scale so the longer side is ``size``, keeping the aspect ratio; smaller images stay unless ``upscale``."""
    width, height = image.size
    longest = max(width, height)
    if longest == size or (longest < size and not upscale):
        return image
    scale = size / longest
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(target, RESAMPLE[resample])
