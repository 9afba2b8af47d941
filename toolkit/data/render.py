"""From an image file to the pixels trained on: decode, fit to the bucket, flip, to a [-1, 1] tensor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.data.buckets import Placement, fit_image
from toolkit.data.images import BadImage, load_image

if TYPE_CHECKING:
    import torch
    from PIL import Image


def render(path: Path, placement: Placement, flip_x: bool = False, flip_y: bool = False) -> "Image.Image":
    """Decode ``path`` (reduced-scale JPEG decoding when it is larger than needed) and fit it.

    Raises BadImage when decoding fails or the image's aspect is no longer the scanned one (the
    file changed since), instead of training on a distorted image.
    """
    image = load_image(path, at_least=placement.resized)
    (width, height), (source_w, source_h) = image.size, placement.source
    if abs(width * source_h - height * source_w) > 0.02 * max(width * source_h, height * source_w):
        raise BadImage(path, "size differs from the scan", f"{width}x{height}, scanned as {source_w}x{source_h}")
    return fit_image(image, placement, flip_x, flip_y)


def to_pixels(images: "list[Image.Image]") -> "torch.Tensor":
    """Same-size RGB images -> (B, 3, H, W) float32 in [-1, 1]."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().float()
    return pixels.div_(127.5).sub_(1.0)
