"""ClipEmbedder on a tiny random CLIP saved with save_pretrained and loaded back."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.prep_images import scene
from toolkit.errors import EaselError
from toolkit.eval.clip import ClipEmbedder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return ClipEmbedder(str(tiny_clip), device=CPU, dtype=torch.float32, batch_size=2)


def test_embeddings_are_unit_rows_that_match_the_model(clip):
    images = [scene(0), scene(1, (40, 70)), scene(2)]
    embeds = clip.images(images)
    assert embeds.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        pixels = clip.processor(images=images, return_tensors="pt")["pixel_values"]
        out = clip.model.get_image_features(pixel_values=pixels)
    direct = (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
    np.testing.assert_allclose(embeds, direct / np.linalg.norm(direct, axis=1, keepdims=True), atol=1e-5)


def test_identical_images_embed_identically_and_batches_do_not_matter(clip):
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    embeds = clip.images([red, scene(3), red.copy()])
    np.testing.assert_allclose(embeds[0], embeds[2], atol=1e-6)
    np.testing.assert_allclose(clip.images([scene(3)])[0], embeds[1], atol=1e-5)


def test_texts_longer_than_the_context_are_truncated(clip):
    embeds = clip.texts(["a red cat", "a very long prompt " * 60])
    assert embeds.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(embeds[0], embeds[1])


def test_image_files_skip_unreadable_files(clip, tmp_path):
    scene(0).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    scene(1).save(tmp_path / "c.jpg")
    embeds, skipped = clip.image_files([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.jpg"])
    assert embeds.shape == (2, 16) and skipped == ["b.png (not an image)"]
    np.testing.assert_allclose(embeds[0], clip.images([scene(0)])[0], atol=1e-5)


def test_missing_clip_model_is_a_user_error(tmp_path):
    with pytest.raises(EaselError, match="cannot load the CLIP model"):
        ClipEmbedder(str(tmp_path / "nowhere"), device=CPU, dtype=torch.float32)


def test_a_model_that_is_not_clip_is_a_user_error():
    with pytest.raises(EaselError, match="is a 'blip' model, not CLIP"):
        ClipEmbedder("tiny:blip", device=CPU, dtype=torch.float32)
