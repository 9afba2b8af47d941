"""Loss masks (ai-toolkit's ``mask_path`` / ``alpha_mask``): which pixels of an image the loss looks at.

A mask is a grayscale image (white: full loss, black: ``mask_min_value``) with the image's stem in the mask
folder, or the image's own alpha channel. It is fitted to the bucket exactly as its image (same placement and
flips), inverted when asked, and mapped from [0, 1] to [mask_min_value, 1]. The trainer scales it to the
latents, normalises it to mean 1 over the batch and multiplies the per-element loss by it, as ai-toolkit does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.data.buckets import Placement, fit_image
from toolkit.data.images import IMAGE_EXTENSIONS, BadImage

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MaskRule:
    """Where one dataset's masks come from and how they are read."""

    folder: Path | None = None
    """Folder of mask images named like the images (any image extension)."""
    alpha: bool = False
    """Use the image's alpha channel (opaque: full loss)."""
    invert: bool = False
    min_value: float = 0.0

    @property
    def active(self) -> bool:
        return self.alpha or self.folder is not None

    def source(self, image: Path) -> Path | None:
        """The file holding this image's mask (the image itself for alpha masks); None: no mask, full loss."""
        if self.alpha:
            return image
        if self.folder is None:
            return None
        for suffix in IMAGE_EXTENSIONS:
            for candidate in (self.folder / f"{image.stem}{suffix}", self.folder / f"{image.stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
        return None


def _gray(path: Path, alpha: bool) -> "object":
    """The mask as an 8-bit grayscale PIL image, EXIF-oriented."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except Exception as err:  # noqa: BLE001 - damaged files make PIL raise many kinds of errors
        raise BadImage(path, "unreadable mask", str(err)) from None
    if alpha:
        if "A" not in image.getbands() and "transparency" not in image.info:
            raise BadImage(path, "no alpha channel", "alpha_mask needs images with transparency (RGBA PNG / WebP)")
        return image.convert("RGBA").getchannel("A")
    return image.convert("L")


def render_mask(rule: MaskRule, image: Path, placement: Placement, flip_x: bool = False,
                flip_y: bool = False) -> "torch.Tensor":
    """The (1, H, W) loss weights of ``image`` in its bucket, in [min_value, 1]; all ones without a mask file."""
    import numpy as np
    import torch
    from PIL import ImageOps

    width, height = placement.bucket
    path = rule.source(image)
    if path is None:
        return torch.ones(1, height, width)
    gray = _gray(path, rule.alpha)
    if rule.invert:
        gray = ImageOps.invert(gray)
    fitted = fit_image(gray.resize(placement.source), placement, flip_x, flip_y)
    values = torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 255.0)[None]
    return rule.min_value + (1.0 - rule.min_value) * values


def latent_mask(masks: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """Pixel masks (B, 1, H, W) -> the same at the latents' (h, w) (area averages: a latent pixel half inside gets 0.5)."""
    import torch

    return torch.nn.functional.interpolate(masks.float(), size=size, mode="area")


def normalised(weights: "torch.Tensor") -> "torch.Tensor":
    """Weights scaled to mean 1 over the batch (so a mask changes where the loss looks, not its size)."""
    return weights / weights.mean().clamp_min(1e-8)
