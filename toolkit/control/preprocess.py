"""Control-image preprocessors that need no model: image ops on the pixels (numpy + PIL).

- ``canny``: edges as OpenCV's Canny finds them (Gaussian blur, Sobel gradient |gx| + |gy| on 0-255 pixels,
  thinning to the ridge along the gradient direction, hysteresis between the two thresholds): white on black;
- ``softedge``: the blurred image's gradient magnitude, scaled so its 99th percentile is white (soft white edges on
  black, what HED / PiDiNet soft-edge ControlNets take);
- ``lineart``: dark strokes against their surroundings (a wide Gaussian blur minus the image, as A1111's
  ``lineart_standard``), white lines on black;
- ``grayscale``: the luminance (recolor ControlNets); ``tile``: shrunk and blown up again (tile ControlNets);
- ``none``: the image as it is (an edge map, depth map or pose drawn elsewhere).

``depth`` and ``pose`` need a model and live in ``toolkit.control.estimators``. Every result is an RGB image of the
input's size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

LINEART_BACKGROUND_SIGMA = 6.0
"""lineart: sigma of the blur that stands for a stroke's surroundings (A1111's lineart_standard uses 6)."""


def luminance(image: "Image.Image") -> "np.ndarray":
    """The image's luminance (ITU-R 601, as PIL's "L" mode) as float32 in 0..255."""
    import numpy as np

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def gaussian_blur(array: "np.ndarray", sigma: float) -> "np.ndarray":
    """A 2-D array blurred by a Gaussian of ``sigma`` pixels (separable, edges reflected); ``sigma`` 0 returns it."""
    import numpy as np

    if sigma <= 0:
        return array.astype(np.float32)
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = array.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > radius else "edge")
        out = sum(weight * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i, weight in enumerate(kernel))
    return out


def sobel(array: "np.ndarray") -> "tuple[np.ndarray, np.ndarray]":
    """Sobel derivatives (gx along columns, gy along rows) of a 2-D array, edges replicated."""
    import numpy as np

    padded = np.pad(array, 1, mode="edge")
    rows, cols = array.shape

    def at(dy: int, dx: int) -> "np.ndarray":
        return padded[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def _thin(magnitude: "np.ndarray", gx: "np.ndarray", gy: "np.ndarray") -> "np.ndarray":
    """Non-maximum suppression: keep a pixel where its magnitude is a ridge across the gradient direction."""
    import numpy as np

    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (((angle + 22.5) // 45) % 4).astype(np.int8)  # 0: horizontal gradient, 1: 45, 2: vertical, 3: 135 degrees
    padded = np.pad(magnitude, 1)
    rows, cols = magnitude.shape
    keep = np.zeros(magnitude.shape, dtype=bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]
        behind = padded[1 - dy:1 - dy + rows, 1 - dx:1 - dx + cols]
        keep |= (sector == index) & (magnitude > behind) & (magnitude >= ahead)
    return keep


def _hysteresis(strong: "np.ndarray", weak: "np.ndarray") -> "np.ndarray":
    """The weak pixels 8-connected (through weak pixels) to a strong one."""
    import numpy as np

    edges = strong & weak
    while True:
        padded = np.pad(edges, 1)
        rows, cols = edges.shape
        grown = np.zeros_like(edges)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= padded[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]
        grown &= weak
        if np.array_equal(grown, edges):
            return edges
        edges = grown


def canny_edges(image: "Image.Image", low: float = 100, high: float = 200, blur: float = 1.0) -> "np.ndarray":
    """Canny's edge map of ``image`` as a boolean array (thresholds on the Sobel |gx| + |gy| of 0-255 pixels)."""
    gx, gy = sobel(gaussian_blur(luminance(image), blur))
    magnitude = abs(gx) + abs(gy)
    ridge = _thin(magnitude, gx, gy)
    return _hysteresis(ridge & (magnitude >= high), ridge & (magnitude >= low))


def _to_rgb(array: "np.ndarray") -> "Image.Image":
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")


def _scaled(values: "np.ndarray") -> "np.ndarray":
    """``values`` scaled so that their 99th percentile (of the nonzero ones) is 255."""
    import numpy as np

    positive = values[values > 1e-3]
    top = float(np.percentile(positive, 99)) if positive.size else 0.0
    return values * (255.0 / top) if top > 0 else values * 0


def soft_edges(image: "Image.Image", blur: float = 1.0) -> "Image.Image":
    """The blurred image's gradient magnitude, white on black."""
    import numpy as np

    gx, gy = sobel(gaussian_blur(luminance(image), blur))
    return _to_rgb(_scaled(np.hypot(gx, gy)))


def lineart(image: "Image.Image", blur: float = 1.0) -> "Image.Image":
    """Dark strokes as white lines on black: how much darker each pixel is than its blurred surroundings."""
    import numpy as np

    gray = gaussian_blur(luminance(image), blur)
    ink = np.maximum(gaussian_blur(gray, LINEART_BACKGROUND_SIGMA) - gray, 0)
    return _to_rgb(_scaled(ink))


def tile(image: "Image.Image", downscale: int = 8) -> "Image.Image":
    """The image shrunk by ``downscale`` (area average) and enlarged back (bicubic): detail gone, layout and colour kept."""
    from PIL import Image

    rgb = image.convert("RGB")
    small = rgb.resize((max(1, rgb.width // downscale), max(1, rgb.height // downscale)), Image.Resampling.BOX)
    return small.resize(rgb.size, Image.Resampling.BICUBIC)


def apply(image: "Image.Image", settings: Any) -> "Image.Image":
    """``image`` preprocessed as ``settings`` (a ``PreprocessConfig``) says; depth and pose run their model."""
    kind = settings.type
    if kind == "none":
        return image.convert("RGB")
    if kind == "canny":
        return _to_rgb(canny_edges(image, settings.low_threshold, settings.high_threshold, settings.blur) * 255.0)
    if kind == "softedge":
        return soft_edges(image, settings.blur)
    if kind == "lineart":
        return lineart(image, settings.blur)
    if kind == "grayscale":
        return image.convert("L").convert("RGB")
    if kind == "tile":
        return tile(image, settings.downscale)
    from toolkit.control import estimators

    return estimators.estimate(kind, settings.model, image)
