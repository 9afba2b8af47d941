"""Loss masks: fitted like their image, inverted, floored at mask_min_value, taken from the alpha channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.data.buckets import place
from toolkit.data.images import BadImage
from toolkit.data.masks import MaskRule, latent_mask, normalised, render_mask


def _half_mask(path, size=(64, 32)):
    """Black on the left half, white on the right."""
    array = np.zeros((size[1], size[0]), dtype=np.uint8)
    array[:, size[0] // 2:] = 255
    Image.fromarray(array, "L").save(path)


@pytest.fixture
def files(tmp_path):
    Image.new("RGB", (64, 32), (10, 20, 30)).save(tmp_path / "a.png")
    (tmp_path / "masks").mkdir()
    _half_mask(tmp_path / "masks" / "a.jpg")
    return tmp_path


def test_mask_follows_the_placement_flip_and_floor(files):
    placement = place((64, 32), (64, 32))
    rule = MaskRule(folder=files / "masks", min_value=0.25)
    mask = render_mask(rule, files / "a.png", placement)
    assert mask.shape == (1, 32, 64)
    assert torch.allclose(mask[0, :, :28], torch.tensor(0.25), atol=0.02) and torch.allclose(mask[0, :, 36:], torch.tensor(1.0), atol=0.02)
    flipped = render_mask(rule, files / "a.png", placement, flip_x=True)
    assert torch.allclose(flipped, mask.flip(-1), atol=0.02)
    inverted = render_mask(MaskRule(folder=files / "masks", invert=True), files / "a.png", placement)
    assert float(inverted[0, 0, 0]) > 0.95 and float(inverted[0, 0, -1]) < 0.05
    cropped = render_mask(rule, files / "a.png", place((64, 32), (32, 32)))
    assert cropped.shape == (1, 32, 32) and float(cropped[0, 0, 0]) < 0.3 < float(cropped[0, 0, -1])


def test_no_mask_file_means_full_loss_and_alpha_masks(tmp_path):
    (tmp_path / "masks").mkdir()
    rule = MaskRule(folder=tmp_path / "masks")
    Image.new("RGB", (16, 16)).save(tmp_path / "plain.png")
    assert torch.equal(render_mask(rule, tmp_path / "plain.png", place((16, 16), (16, 16))), torch.ones(1, 16, 16))
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, 8:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    mask = render_mask(MaskRule(alpha=True), tmp_path / "cut.png", place((16, 16), (16, 16)))
    assert float(mask[0, 0, 0]) == 0.0 and float(mask[0, 0, -1]) == 1.0
    with pytest.raises(BadImage, match="no alpha channel"):
        render_mask(MaskRule(alpha=True), tmp_path / "plain.png", place((16, 16), (16, 16)))


def test_latent_mask_averages_and_normalised_has_mean_one():
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, :, 8:] = 1
    small = latent_mask(masks, (2, 2))
    assert small[0, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert float(normalised(small).mean()) == pytest.approx(1.0)
