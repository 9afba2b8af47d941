"""Contact sheets: many images on one canvas, optionally with a caption under each.

Captions are wrapped to the cell's width in pixels. Prompts often share their first words ("[trigger] a
painting of a house / boat / tree"), so the words every label starts with are shown as "..." and each
cell shows what sets it apart; the full labels are kept in the saved file (``save_grid``: a PNG text
chunk, or the EXIF ImageDescription of a JPEG / WebP), as JSON under ``GRID_KEY``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image, ImageFont

GRID_KEY = "easel_grid"
"""Metadata key of a saved grid's full labels (JSON)."""
ELLIPSIS = "..."
MAX_LABEL_LINES = 3
_IMAGE_DESCRIPTION = 0x010E


def distinct_labels(labels: list[str]) -> list[str]:
    """``labels`` without the leading words they all share (shown as "..."), so each shows what differs.

    At least one word of every label is kept; labels that share no first word, or are all the same, are
    returned as they are.
    """
    words = [label.split() for label in labels]
    if len(set(labels)) < 2:
        return list(labels)
    shared = 0
    while all(len(w) > shared + 1 for w in words) and len({w[shared] for w in words}) == 1:
        shared += 1
    return [f"{ELLIPSIS} {' '.join(w[shared:])}" for w in words] if shared else list(labels)


def wrap_text(text: str, width: float, font: "ImageFont.ImageFont | ImageFont.FreeTypeFont", max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a word wider than that is split); overflow ends with an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while len(word) > 1 and font.getlength(word) > width:
            cut = 1
            while cut < len(word) and font.getlength(word[:cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1].rstrip(".")
        while last and font.getlength(last + ELLIPSIS) > width:
            last = last[:-1]
        lines[-1] = last + ELLIPSIS
    return lines


def label_lines(labels: list[str], width: float, *, abbreviate: bool = True,
                max_lines: int = MAX_LABEL_LINES) -> list[list[str]]:
    """The lines drawn under each cell: the labels (shared leading words as "..." with ``abbreviate``), wrapped."""
    from PIL import ImageFont

    font = ImageFont.load_default()
    shown = distinct_labels(labels) if abbreviate else labels
    return [wrap_text(label, width, font, max_lines) for label in shown]


def make_grid(images: "list[Image.Image]", labels: list[str] | None = None, columns: int | None = None,
              padding: int = 4, background: tuple[int, int, int] = (255, 255, 255), abbreviate: bool = True) -> "Image.Image":
    """Lay ``images`` out row by row (``columns`` default: a near-square grid), each in a cell of the largest size.

    ``labels`` go under the cells (see ``label_lines``); save with ``save_grid`` to keep them whole in the file.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    columns = max(1, min(columns or math.ceil(math.sqrt(len(images))), len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w, cell_h = max(im.width for im in images), max(im.height for im in images)
    font = ImageFont.load_default()
    line_h = font.getbbox("Ag")[3] + 2
    wrapped = label_lines(labels, cell_w, abbreviate=abbreviate) if labels else None
    label_h = (max((len(lines) for lines in wrapped), default=0) * line_h + padding) if wrapped else 0
    sheet = Image.new("RGB", (columns * (cell_w + padding) + padding, rows * (cell_h + label_h + padding) + padding), background)
    draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        x, y = padding + col * (cell_w + padding), padding + row * (cell_h + label_h + padding)
        sheet.paste(image.convert("RGB"), (x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2))
        for line_no, line in enumerate(wrapped[index] if wrapped else []):
            draw.text((x, y + cell_h + padding // 2 + line_no * line_h), line, fill=(0, 0, 0), font=font)
    return sheet


def save_grid(grid: "Image.Image", path: Path, metadata: dict[str, Any], image_format: str | None = None) -> None:
    """Save ``grid`` as PNG, JPEG or WebP (default: from the suffix) with ``metadata`` (the full labels) as JSON."""
    from PIL import Image, PngImagePlugin

    kind = (image_format or path.suffix.lstrip(".")).upper().replace("JPG", "JPEG")
    text = json.dumps(metadata, ensure_ascii=True)
    if kind == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(GRID_KEY, text)
        grid.save(path, format="PNG", pnginfo=info)
        return
    exif = Image.Exif()
    exif[_IMAGE_DESCRIPTION] = f"{GRID_KEY} {text}"
    grid.convert("RGB").save(path, format=kind, exif=exif, quality=95)


def read_grid_metadata(path: Path) -> dict[str, Any] | None:
    """The metadata ``save_grid`` stored in ``path``, or None."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.info.get(GRID_KEY)
        if text is None:
            described = image.getexif().get(_IMAGE_DESCRIPTION)
            text = described[len(GRID_KEY) + 1:] if isinstance(described, str) and described.startswith(GRID_KEY) else None
    return json.loads(text) if text else None
