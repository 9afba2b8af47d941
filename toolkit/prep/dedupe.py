"""Perceptual hashing (DCT pHash, 64 bits) and duplicate grouping by Hamming distance. numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

HASH_SIZE = 8
"""The hash keeps the HASH_SIZE x HASH_SIZE lowest frequencies: 64 bits."""
SAMPLE_SIZE = 32
"""Images are reduced to SAMPLE_SIZE x SAMPLE_SIZE gray pixels before the DCT."""


@lru_cache(maxsize=4)
def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``dct_matrix(n) @ x`` is scipy's ``dct(x, norm="ortho")``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


def dct2(block: np.ndarray) -> np.ndarray:
    """2-D orthonormal DCT-II of a square array."""
    matrix = dct_matrix(block.shape[0])
    return matrix @ block @ matrix.T


def phash(image: Image.Image) -> int:
    """64-bit perceptual hash: bits of the 8x8 lowest DCT frequencies of a 32x32 gray copy, set where above their median."""
    small = image.convert("L").resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.LANCZOS)
    low = dct2(np.asarray(small, dtype=np.float64))[:HASH_SIZE, :HASH_SIZE]
    bits = (low > np.median(low)).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Duplicate:
    """``index`` duplicates the kept image ``of`` at Hamming ``distance``."""

    index: int
    of: int
    distance: int


def find_duplicates(hashes: list[int], priority: list[int], max_distance: int) -> list[Duplicate]:
    """Greedy grouping: images are visited in ``priority`` order (indices, best first); each is kept
    unless it is within ``max_distance`` of an image already kept, the closest of which it duplicates."""
    kept: list[int] = []
    kept_hashes = np.zeros(0, dtype=np.uint64)
    found: list[Duplicate] = []
    for index in priority:
        if kept:
            differing = np.bitwise_xor(kept_hashes, np.uint64(hashes[index]))
            distances = np.unpackbits(differing.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
            closest = int(np.argmin(distances))
            if distances[closest] <= max_distance:
                found.append(Duplicate(index, kept[closest], int(distances[closest])))
                continue
        kept.append(index)
        kept_hashes = np.append(kept_hashes, np.uint64(hashes[index]))
    return found
