"""Aspect-ratio buckets: the size each image is trained at, and how it is fitted to it.

For a resolution ``r`` and the architecture's divisibility ``d``, an image of ``w x h`` gets the
bucket ``(bw, bh)`` with both sides multiples of ``d``, ``bw * bh <= min(r * r, w * h)``,
``bw <= w`` and ``bh <= h`` (never upscaling: a small image gets a smaller bucket), and the aspect
ratio closest to ``w / h`` among the largest bucket of each width. The image is scaled to cover
the bucket and cropped (centered, or at a random place).

Two limits keep buckets from degenerating (a 20000x20 image would otherwise get a bucket one latent
patch high and a thousand wide, past what a model's position embeddings reach): both sides are at
least one step of the divisibility (a latent patch; a thinner image gets no bucket and is skipped),
and with ``max_aspect`` the long side is at most that many times the short one (a more elongated
image is cropped to it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.models.base import ImageInfo

if TYPE_CHECKING:
    from PIL import Image

Size = tuple[int, int]
"""(width, height)."""


def _height_for(bucket_width: int, area: int, max_height: int, divisibility: int) -> int:
    """The tallest multiple of ``divisibility`` with ``bucket_width * height <= area`` and ``<= max_height``."""
    return min(max_height, area // bucket_width // divisibility * divisibility)


def _aspect_error(bucket: Size, aspect: float) -> float:
    return abs(math.log(bucket[0] / bucket[1] / aspect))


def choose_bucket(width: int, height: int, resolution: int, divisibility: int, *,
                  max_aspect: float | None = None) -> Size | None:
    """The bucket of a ``width x height`` image at ``resolution``; None when a side is below ``divisibility``.

    With ``max_aspect`` the image is first taken as cropped to that aspect ratio, and the bucket's long side
    is cut to at most ``max_aspect`` times its short side (the rounding to ``divisibility`` may overshoot).
    """
    if max_aspect is None:
        return _closest_bucket(width, height, resolution, divisibility)
    long_side, short_side = max(width, height), min(width, height)
    cropped = min(long_side, int(short_side * max_aspect))
    size = (cropped, short_side) if width >= height else (short_side, cropped)
    bucket = _closest_bucket(*size, resolution, divisibility)
    if bucket is None:
        return None
    wide, tall = bucket
    if wide >= tall:
        return min(wide, int(tall * max_aspect) // divisibility * divisibility), tall
    return wide, min(tall, int(wide * max_aspect) // divisibility * divisibility)


def _closest_bucket(width: int, height: int, resolution: int, divisibility: int) -> Size | None:
    """The bucket closest in aspect to ``width x height`` (see ``choose_bucket``).

    Candidates are, for each bucket width ``k * d``, the tallest fitting height. Their aspect
    ratio grows strictly with the width, so a binary search finds the two candidates around the
    image's aspect; the closer wins (ties go to the larger area).
    """
    d = divisibility
    area = min(resolution * resolution, width * height)
    max_w, max_h = width // d * d, height // d * d
    k_max = min(max_w, area // d // d * d) // d
    if max_h < d or k_max < 1:
        return None
    aspect = width / height

    def candidate(k: int) -> Size:
        return k * d, _height_for(k * d, area, max_h, d)

    low, high = 1, k_max
    while low < high:
        mid = (low + high) // 2
        bw, bh = candidate(mid)
        if bw / bh >= aspect:
            high = mid
        else:
            low = mid + 1
    options = [candidate(k) for k in (low - 1, low) if k >= 1]
    return min(options, key=lambda size: (_aspect_error(size, aspect), -size[0] * size[1]))


def square_bucket(resolution: int, divisibility: int) -> Size:
    """The ``resolution`` square (sides rounded down to ``divisibility``): ``square_crop`` / ``buckets: false``."""
    side = max(divisibility, resolution // divisibility * divisibility)
    return side, side


def cover_size(width: int, height: int, bucket: Size) -> Size:
    """The size a ``width x height`` image is resized to so that it covers ``bucket`` (keeping its aspect)."""
    scale = max(bucket[0] / width, bucket[1] / height)
    return max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale))


@dataclass(frozen=True)
class Placement:
    """How one image is fitted to its bucket."""

    source: Size
    """(width, height) of the EXIF-oriented source image."""
    bucket: Size
    """(width, height) trained at."""
    resized: Size
    """(width, height) after scaling to cover the bucket."""
    crop: tuple[int, int]
    """(top, left) of the crop, in resized pixels."""

    def image_info(self, flip_x: bool = False, flip_y: bool = False) -> ImageInfo:
        """SDXL-style micro-conditioning of this placement; the crop is given in the flipped image."""
        top, left = self.crop
        if flip_x:
            left = self.resized[0] - left - self.bucket[0]
        if flip_y:
            top = self.resized[1] - top - self.bucket[1]
        return ImageInfo(original_size=(self.source[1], self.source[0]), crop_top_left=(top, left),
                         target_size=(self.bucket[1], self.bucket[0]))


def place(source: Size, bucket: Size, rng: random.Random | None = None) -> Placement:
    """Scale-to-cover, then a center crop (or a random one when ``rng`` is given)."""
    resized = cover_size(source[0], source[1], bucket)
    spare_x, spare_y = resized[0] - bucket[0], resized[1] - bucket[1]
    if rng is None:
        crop = (spare_y // 2, spare_x // 2)
    else:
        crop = (rng.randint(0, spare_y), rng.randint(0, spare_x))
    return Placement(source=source, bucket=bucket, resized=resized, crop=crop)


def fit_image(image: "Image.Image", placement: Placement, flip_x: bool = False, flip_y: bool = False) -> "Image.Image":
    """Resize ``image`` (any size with the source's aspect, e.g. a reduced JPEG decode), crop and flip it."""
    from PIL import Image

    if image.size != placement.resized:
        image = image.resize(placement.resized, Image.Resampling.LANCZOS, reducing_gap=3.0)
    top, left = placement.crop
    image = image.crop((left, top, left + placement.bucket[0], top + placement.bucket[1]))
    if flip_x:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip_y:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image
