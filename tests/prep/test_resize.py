"""Center crops and aspect-keeping resizes."""

import numpy as np
from PIL import Image

from toolkit.prep.resize import center_crop_square, fit_max_side


def _three_bands(width: int, height: int) -> Image.Image:
    """Left third red, middle third green, right third blue."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 3, 0] = 255
    array[:, width // 3: 2 * width // 3, 1] = 255
    array[:, 2 * width // 3:, 2] = 255
    return Image.fromarray(array)


def test_center_crop_keeps_the_middle_of_a_wide_image():
    out = center_crop_square(_three_bands(300, 100), 50, "nearest")
    assert out.size == (50, 50)
    assert set(map(tuple, np.asarray(out).reshape(-1, 3))) == {(0, 255, 0)}


def test_center_crop_of_a_tall_image_and_upscaling():
    tall = Image.new("RGB", (16, 40), (9, 9, 9))
    tall.paste((200, 0, 0), (0, 0, 16, 12))
    out = center_crop_square(tall, 64, "nearest")
    assert out.size == (64, 64)
    assert np.asarray(out)[0, 0].tolist() == [9, 9, 9]


def test_center_crop_at_the_same_size_is_a_pure_crop():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    out = center_crop_square(image, 40)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image)[:, 10:50])


def test_max_side_keeps_the_aspect_ratio():
    out = fit_max_side(Image.new("RGB", (400, 100)), 200)
    assert out.size == (200, 50)
    assert fit_max_side(Image.new("RGB", (99, 300)), 100).size == (33, 100)


def test_max_side_does_not_upscale_unless_asked():
    small = Image.new("RGB", (50, 20))
    assert fit_max_side(small, 100).size == (50, 20)
    assert fit_max_side(small, 100, upscale=True).size == (100, 40)
