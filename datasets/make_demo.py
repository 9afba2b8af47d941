#!/usr/bin/env python
"""Make the demo dataset: small paintings in one warm colour style, with captions.

    python datasets/make_demo.py [--out datasets/demo] [--count 16] [--size 96]

Every image is a soft composition of orange/pink/peach shapes on a cream ground, so a LoRA
trained on them has one clear thing to learn (the palette). Deterministic: the same files each time.
"""

from __future__ import annotations

import argparse
import random
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    make(args.out, args.count)
    print(f"wrote {args.count} images with captions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
