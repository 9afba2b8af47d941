"""Evaluation of generated images: CLIP score, style similarity, reports and grids."""
