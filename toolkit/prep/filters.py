"""Image quality checks: sharpness (Laplacian variance), size and aspect ratio. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# OpenCV's fixed-point RGB -> gray weights (0.299, 0.587, 0.114 scaled by 2**14), so the sharpness
# equals what cv2.cvtColor + cv2.Laplacian compute on the same pixels.
_GRAY_WEIGHTS = (4899, 9617, 1868)
_GRAY_SHIFT = 14


def grayscale(image: Image.Image) -> np.ndarray:
    """An RGB image -> uint8 gray array, rounded exactly like ``cv2.cvtColor(..., COLOR_RGB2GRAY)``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    weighted = rgb[..., 0] * _GRAY_WEIGHTS[0] + rgb[..., 1] * _GRAY_WEIGHTS[1] + rgb[..., 2] * _GRAY_WEIGHTS[2]
    return ((weighted + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT).astype(np.uint8)


def laplacian(gray: np.ndarray) -> np.ndarray:
    """The 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] with mirrored borders (OpenCV's BORDER_REFLECT_101).

    Same values as ``cv2.Laplacian(gray, cv2.CV_64F)`` (its default ``ksize=1``).
    """
    padded = np.pad(np.asarray(gray, dtype=np.float64), 1, mode="reflect")
    center = padded[1:-1, 1:-1]
    return padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4.0 * center


def laplacian_variance(image: Image.Image) -> float:
    """Sharpness: the variance of the Laplacian of the grayscale image (low = blurry)."""
    return float(laplacian(grayscale(image)).var())


@dataclass(frozen=True)
class Verdict:
    """Why an image fails a check (``reason``: a short label; ``detail``: the numbers; ``option``: the setting it failed)."""

    reason: str
    detail: str
    option: str


def check_image(image: Image.Image, *, blur_threshold: float | None = None, min_size: int | None = None,
                min_aspect: float | None = None, max_aspect: float | None = None) -> tuple[Verdict | None, dict[str, float]]:
    """Apply the checks in order (size, aspect, blur); returns the first failure (or None) and the measures."""
    width, height = image.size
    aspect = width / height
    measures: dict[str, float] = {"width": width, "height": height, "aspect": round(aspect, 4)}
    if min_size is not None and min(width, height) < min_size:
        return Verdict("too small", f"{width}x{height}, shorter side < {min_size}", "min_size"), measures
    if min_aspect is not None and aspect < min_aspect:
        return Verdict("aspect", f"width/height {aspect:.3f} < {min_aspect}", "min_aspect"), measures
    if max_aspect is not None and aspect > max_aspect:
        return Verdict("aspect", f"width/height {aspect:.3f} > {max_aspect}", "max_aspect"), measures
    if blur_threshold is not None:
        sharpness = laplacian_variance(image)
        measures["laplacian_variance"] = round(sharpness, 3)
        if sharpness < blur_threshold:
            return Verdict("blurry", f"Laplacian variance {sharpness:.1f} < {blur_threshold:g}", "blur_threshold"), measures
    return None, measures
