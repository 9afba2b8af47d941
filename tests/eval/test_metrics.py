"""CLIP score and style similarity on fixed embeddings, against hand-computed cosines."""

import math

import numpy as np
import pytest

from toolkit.eval.metrics import clip_scores, cosine, normalize, style_similarities


def test_cosine_by_hand():
    # cos([3, 4], [4, 3]) = (12 + 12) / (5 * 5) = 0.96; cos([1, 0], [1, 1]) = 1 / sqrt(2)
    np.testing.assert_allclose(cosine(np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[4.0, 3.0], [1.0, 1.0]])), [0.96, 1 / math.sqrt(2)])


def test_clip_score_scales():
    images = np.array([[3.0, 4.0], [1.0, 0.0], [1.0, 0.0]])
    texts = np.array([[4.0, 3.0], [1.0, 1.0], [-2.0, 0.5]])
    # the third pair: cos = -2 / sqrt(4.25) < 0, clipped to 0 in percent
    np.testing.assert_allclose(clip_scores(images, texts, "percent"), [96.0, 100 / math.sqrt(2), 0.0])
    np.testing.assert_allclose(clip_scores(images, texts, "cosine"), [0.96, 1 / math.sqrt(2), -2 / math.sqrt(4.25)])
    with pytest.raises(ValueError, match="percent"):
        clip_scores(images, texts, "raw")


def test_style_similarity_is_the_mean_cosine_to_the_references():
    images = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    references = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # image 0: cos 1, 0, 1/sqrt2 -> mean (1 + 0.7071) / 3; image 1: 0, 1, 1/sqrt2
    expected = (1 + 1 / math.sqrt(2)) / 3
    np.testing.assert_allclose(style_similarities(images, references), [expected, expected])
    with pytest.raises(ValueError):
        style_similarities(images, np.zeros((0, 3)))


def test_normalize_leaves_zero_rows():
    np.testing.assert_allclose(normalize(np.array([[0.0, 0.0], [0.0, 5.0]])), [[0.0, 0.0], [0.0, 1.0]])
