"""The demo dataset: small paintings in one warm colour style, with captions.

Every image is a soft composition of orange/pink/peach shapes on a cream ground, so a LoRA trained
on them has one clear thing to learn (the palette). Deterministic: the same files each time. Used by
the quickstart (``datasets/make_demo.py``) and by the learning tests.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SUBJECTS = ["flower", "house", "tree", "boat", "cat", "bird", "hill", "bridge", "cup", "fish", "moon", "garden"]
PALETTE = [(236, 120, 80), (244, 164, 120), (230, 96, 120), (250, 200, 150), (214, 82, 60)]
GROUND = (250, 236, 214)
SIZES = [(96, 96), (128, 96), (96, 128)]


def painting(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Overlapping blurred ellipses and rectangles in the palette, like wet paint."""
    image = Image.new("RGB", size, GROUND)
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(rng.randint(4, 7)):
        x0, y0 = rng.randint(-10, width - 20), rng.randint(-10, height - 20)
        x1, y1 = x0 + rng.randint(20, width // 2 + 20), y0 + rng.randint(20, height // 2 + 20)
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((x0, y0, x1, y1), fill=rng.choice(PALETTE))
    return image.filter(ImageFilter.GaussianBlur(radius=2.5))


def make(out: Path, count: int, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        painting(rng, SIZES[i % len(SIZES)]).save(out / f"{i:03d}_{subject}.png")
        (out / f"{i:03d}_{subject}.txt").write_text(f"a painting of a {subject}, soft warm colors\n", encoding="utf-8")
