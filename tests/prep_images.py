"""Hand-made test images: sharp scenes of flat rectangles, blurred and recompressed copies, a raw dataset folder."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A sharp image: coloured rectangles with hard edges (Laplacian variance in the hundreds)."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(x) for x in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(24):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(4, max(5, width // 3))), int(rng.integers(4, max(5, height // 3)))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(x) for x in rng.integers(0, 255, 3)))
    return image


def blurred(image: Image.Image, radius: float = 3) -> Image.Image:
    """A strongly blurred copy (Laplacian variance in the single digits)."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def recompressed(image: Image.Image, size: tuple[int, int], quality: int = 70) -> Image.Image:
    """A resized copy that went through JPEG at ``quality`` (a typical near-duplicate)."""
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def make_raw_dataset(folder: Path) -> dict[str, str]:
    """A raw dataset with one problem of each kind; returns file name -> what should happen to it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir()
    scene(0).save(folder / "house.png")
    (folder / "house.txt").write_text("a red house\n", encoding="utf-8")
    scene(3).save(folder / "garden.png")
    (folder / "garden.txt").write_text("WCStyle, a garden", encoding="utf-8")
    blurred(scene(7)).save(folder / "blurry.png")
    (folder / "blurry.txt").write_text("a blurry thing", encoding="utf-8")
    recompressed(scene(3), (64, 64)).save(folder / "garden_copy.jpg", quality=70)
    (folder / "garden_copy.txt").write_text("a garden again", encoding="utf-8")
    scene(5, (20, 20)).save(folder / "tiny.png")
    scene(6, (240, 60)).save(folder / "wide.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    scene(4).save(folder / "sub" / "nested.png")
    (folder / "sub" / "nested.txt").write_text("a nested tree", encoding="utf-8")
    return {"house.png": "kept", "garden.png": "kept", "blurry.png": "blurry", "garden_copy.jpg": "duplicate",
            "tiny.png": "too small", "wide.png": "aspect", "broken.png": "unreadable", "sub/nested.png": "kept"}



def make_mixed_dataset(folder: Path) -> dict[str, str | None]:
    """Every case where two readers may list or caption differently: nested, ``_`` and hidden folders, hidden
    and non-image files, the cache folder, and a metadata.jsonl that disagrees with the caption files.

    Returns what training reads: file name -> caption (None: none of its own).
    """
    files = {"_cover.png": "an underscore file", "_extra/b.png": "in an underscore folder", "bare.png": None,
             "blank_row.png": "caption file under a blank metadata row", "meta.png": "the caption file loses",
             "multi.png": "two\n  lines", "nested/deep/a.jpg": "nested, from its caption file",
             ".hidden/listed.png": "hidden caption file", ".hidden/unlisted.png": "hidden", ".dot.png": "hidden file",
             "_latent_cache/cached.png": "cache"}
    for seed, (name, caption) in enumerate(files.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        scene(seed, (32, 32)).save(path)
        if caption is not None:
            path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.md").write_text("not an image\n", encoding="utf-8")
    scene(20, (32, 32)).save(folder / "notes" / "anim.gif")
    rows = [{"file_name": "meta.png", "text": "metadata wins"}, {"file_name": "blank_row.png", "text": ""},
            {"file_name": "nested/deep/a.jpg", "text": "nested, from metadata"},
            {"file_name": ".hidden/listed.png", "text": "listed  hidden\nimage"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return {"_cover.png": "an underscore file", "_extra/b.png": "in an underscore folder", "bare.png": None,
            "blank_row.png": "caption file under a blank metadata row", "meta.png": "metadata wins",
            "multi.png": "two lines", "nested/deep/a.jpg": "nested, from metadata", ".hidden/listed.png": "listed hidden image"}
