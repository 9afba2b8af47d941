"""Sharpness (Laplacian variance, as OpenCV computes it), size and aspect checks."""

import numpy as np
import pytest
from PIL import Image

from tests.prep_images import blurred, scene
from toolkit.prep.filters import check_image, grayscale, laplacian, laplacian_variance


def _reference_laplacian(gray: np.ndarray) -> np.ndarray:
    """Direct loop: sum of the 4 neighbours minus 4x the pixel, borders mirrored without repeating the edge."""
    h, w = gray.shape

    def at(y: int, x: int) -> float:
        y = -y if y < 0 else (2 * (h - 1) - y if y >= h else y)
        x = -x if x < 0 else (2 * (w - 1) - x if x >= w else x)
        return float(gray[y, x])

    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            out[y, x] = at(y - 1, x) + at(y + 1, x) + at(y, x - 1) + at(y, x + 1) - 4 * at(y, x)
    return out


def test_laplacian_of_a_single_bright_pixel_by_hand():
    gray = np.zeros((3, 4), dtype=np.uint8)
    gray[1, 1] = 10
    # The pixel itself: -4 * 10. Its inner neighbour (1, 2): +10. The three neighbours on the border see the
    # bright pixel twice: once directly and once as their mirrored outside neighbour (OpenCV's default
    # BORDER_REFLECT_101 mirrors row -1 onto row 1). Zero padding or edge replication would give 10 there.
    expected = np.array([[0, 20, 0, 0], [20, -40, 10, 0], [0, 20, 0, 0]], dtype=float)
    np.testing.assert_array_equal(laplacian(gray), expected)
    assert laplacian(gray).var() == pytest.approx(np.mean(expected ** 2) - np.mean(expected) ** 2)


def test_laplacian_matches_direct_definition_on_random_pixels():
    gray = np.random.default_rng(1).integers(0, 256, size=(7, 5)).astype(np.uint8)
    np.testing.assert_allclose(laplacian(gray), _reference_laplacian(gray))


def test_grayscale_rounds_like_opencv():
    # cv2.cvtColor(COLOR_RGB2GRAY) gives 76 for pure red, 150 for pure green, 29 for pure blue, 255 for white.
    image = Image.new("RGB", (4, 1))
    image.putdata([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)])
    assert grayscale(image).tolist() == [[76, 150, 29, 255]]


def test_flat_image_has_zero_variance_and_blur_lowers_it():
    assert laplacian_variance(Image.new("RGB", (16, 16), (90, 30, 200))) == 0.0
    sharp = scene(0)
    assert laplacian_variance(sharp) > 300
    assert laplacian_variance(blurred(sharp)) < 20


def test_check_image_reports_blur_with_the_measure():
    verdict, measures = check_image(blurred(scene(0)), blur_threshold=100)
    assert verdict is not None and verdict.reason == "blurry"
    assert measures["laplacian_variance"] < 100
    verdict, measures = check_image(scene(0), blur_threshold=100)
    assert verdict is None and measures["laplacian_variance"] > 100


@pytest.mark.parametrize("size,kwargs,reason", [
    ((20, 40), {"min_size": 32}, "too small"),
    ((40, 20), {"min_size": 20}, None),
    ((120, 40), {"max_aspect": 2.0}, "aspect"),
    ((40, 120), {"min_aspect": 0.5}, "aspect"),
    ((80, 40), {"min_aspect": 0.5, "max_aspect": 2.0}, None),
])
def test_size_and_aspect_limits(size, kwargs, reason):
    verdict, measures = check_image(scene(2, size), **kwargs)
    assert (verdict.reason if verdict else None) == reason
    assert (measures["width"], measures["height"]) == size
