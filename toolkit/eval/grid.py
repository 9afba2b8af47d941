"""A labelled comparison grid: one row per variant, one column per prompt (PIL only).

Column headers show each prompt from where the prompts start to differ (``toolkit.sampling.grid``);
save the grid with ``save_grid`` to keep the full prompts in the file.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from toolkit.sampling.grid import distinct_labels, wrap_text

PAD = 6
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """``image`` scaled to fit a ``cell`` x ``cell`` box, centered on white."""
    thumb = image.convert("RGB")
    thumb.thumbnail((cell, cell), Image.Resampling.LANCZOS)
    box = Image.new("RGB", (cell, cell), BACKGROUND)
    box.paste(thumb, ((cell - thumb.width) // 2, (cell - thumb.height) // 2))
    return box


def comparison_grid(rows: list[str], columns: list[str], cells: list[list[list[Image.Image]]], cell: int = 256) -> Image.Image:
    """``cells[r][c]`` holds the images of variant ``rows[r]`` for prompt ``columns[c]`` (side by side, e.g. one per seed)."""
    font = ImageFont.load_default()
    line_height = int(font.getbbox("Ag")[3]) + 2
    per_column = max((len(images) for row in cells for images in row), default=1)
    column_width = per_column * cell + (per_column - 1) * PAD
    label_width = int(max((font.getlength(name) for name in rows), default=0)) + 2 * PAD
    header_lines = [wrap_text(text, column_width, font, 3) for text in distinct_labels(columns)]
    header_height = max((len(lines) for lines in header_lines), default=1) * line_height + 2 * PAD
    width = label_width + len(columns) * (column_width + PAD) + PAD
    height = header_height + len(rows) * (cell + PAD) + PAD
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for c, lines in enumerate(header_lines):
        for i, line in enumerate(lines):
            draw.text((label_width + c * (column_width + PAD), PAD + i * line_height), line, fill=INK, font=font)
    for r, name in enumerate(rows):
        top = header_height + r * (cell + PAD)
        draw.text((PAD, top + cell // 2 - line_height // 2), name, fill=INK, font=font)
        for c, images in enumerate(cells[r]):
            left = label_width + c * (column_width + PAD)
            for i, image in enumerate(images):
                grid.paste(_fit(image, cell), (left + i * (cell + PAD), top))
    return grid
