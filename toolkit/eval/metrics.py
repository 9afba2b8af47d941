"""The metrics, on embeddings: CLIP score and style similarity. numpy only, so they test without a model.

- CLIP score of an image and its prompt: the cosine similarity of their CLIP embeddings. Reported
  either as ``percent``, ``100 * max(cos, 0)`` (the convention of torchmetrics' CLIPScore and most
  papers; about 30 for a matching prompt with ViT-L/14), or as the raw ``cosine`` (about 0.3;
  what seed 003's table shows).
- Style similarity of an image to a set of reference images: the mean cosine similarity between
  the image's CLIP image embedding and each reference image's embedding (in [-1, 1]).
"""

from __future__ import annotations

import numpy as np

CLIP_SCORE_SCALES = ("percent", "cosine")


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally long stacks of vectors."""
    return np.sum(normalize(a) * normalize(b), axis=-1)


def clip_scores(image_embeds: np.ndarray, text_embeds: np.ndarray, scale: str = "percent") -> np.ndarray:
    """CLIP score of each image with its own prompt (row i with row i)."""
    cos = cosine(image_embeds, text_embeds)
    if scale == "percent":
        return 100.0 * np.maximum(cos, 0.0)
    if scale == "cosine":
        return cos
    raise ValueError(f"unknown CLIP score scale '{scale}'; valid: {', '.join(CLIP_SCORE_SCALES)}")


def style_similarities(image_embeds: np.ndarray, reference_embeds: np.ndarray) -> np.ndarray:
    """For each image: the mean cosine similarity to every reference image."""
    if len(reference_embeds) == 0:
        raise ValueError("style similarity needs at least one reference image")
    return (normalize(image_embeds) @ normalize(reference_embeds).T).mean(axis=1)
