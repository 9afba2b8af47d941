"""Contact sheets: many images on one canvas, optionally with a caption under each."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


def make_grid(images: "list[Image.Image]", labels: list[str] | None = None, columns: int | None = None,
              padding: int = 4, background: tuple[int, int, int] = (255, 255, 255)) -> "Image.Image":
    """Lay ``images`` out row by row (``columns`` default: a near-square grid), each in a cell of the largest size."""
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
    chars = max(8, cell_w // max(1, font.getbbox("n")[2]))
    wrapped = [textwrap.wrap(label, chars)[:3] for label in labels] if labels else None
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
