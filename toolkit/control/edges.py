"""Edge agreement: how much of an input image's structure an output kept (the evaluate job's "structure kept").

Both images are brought to the output's size and their Canny edges found (``toolkit.control.preprocess``); an edge
pixel of one counts as kept when the other has an edge within ``tolerance`` pixels (a chessboard neighbourhood), so
a line that moved by a pixel or two still agrees. The score is the F1 of the two directions: precision (output
edges that are input edges) and recall (input edges the output kept), 1 for the same structure, 0 for none shared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

TOLERANCE = 2
"""Pixels an edge may move and still count as kept."""


def _dilate(edges: "np.ndarray", radius: int) -> "np.ndarray":
    """``edges`` grown by ``radius`` pixels in every direction (a square neighbourhood)."""
    import numpy as np

    if radius <= 0:
        return edges
    padded = np.pad(edges, radius)
    rows, cols = edges.shape
    grown = np.zeros_like(edges)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[dy:dy + rows, dx:dx + cols]
    return grown


def edge_f1(source: "np.ndarray", output: "np.ndarray", tolerance: int = TOLERANCE) -> float:
    """F1 agreement of two boolean edge maps of one size (1: same edges within ``tolerance``; 0: none shared);
    two maps without edges agree fully."""
    if not source.any() and not output.any():
        return 1.0
    if not source.any() or not output.any():
        return 0.0
    precision = float((output & _dilate(source, tolerance)).sum() / output.sum())
    recall = float((source & _dilate(output, tolerance)).sum() / source.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def edge_agreement(source: "Image.Image", output: "Image.Image", tolerance: int = TOLERANCE) -> float:
    """How much of ``source``'s edge structure ``output`` kept (``edge_f1`` of their Canny edges at the output's size)."""
    from PIL import Image

    from toolkit.control.preprocess import canny_edges

    if source.size != output.size:
        source = source.convert("RGB").resize(output.size, Image.Resampling.LANCZOS)
    return edge_f1(canny_edges(source), canny_edges(output), tolerance)
