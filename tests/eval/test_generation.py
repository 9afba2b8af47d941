"""generate_images on the real tiny models: one base model for all variants, LoRAs applied and removed per call."""

import numpy as np
import pytest

from toolkit.config.blocks import ModelConfig
from toolkit.config.blocks import LoraRef
from toolkit.eval import generation
from toolkit.eval.generation import GenerationSettings, generate_images, release_models
from toolkit.testing.tiny import save_random_lora


@pytest.fixture
def settings(registry):
    yield GenerationSettings(registry=registry, device="cpu", width=64, height=64, steps=2, guidance_scale=1.0,
                             sampler="euler", batch_size=2)
    release_models()


def pixels(images):
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def test_variants_share_the_base_model_and_loras_come_off_again(settings, tmp_path):
    model = ModelConfig(name_or_path="tiny:sd15", arch="sd15")
    base = generate_images(model, [], ["a red house", "a boat"], [5, 6], settings)
    adapter = next(iter(generation._LOADED.values()))
    lora = save_random_lora(adapter.pipeline(), tmp_path / "style.safetensors", adapter.lora_targets(False), seed=3)
    styled = generate_images(model, [LoraRef(path=str(lora), weight=1.0)], ["a red house", "a boat"], [5, 6], settings)
    again = generate_images(model, [], ["a red house", "a boat"], [5, 6], settings)
    assert len(generation._LOADED) == 1 and next(iter(generation._LOADED.values())) is adapter
    assert len(base) == 4 and all(image.size == (64, 64) for image in base)
    assert np.abs(pixels(styled) - pixels(base)).max() > 10  # the LoRA changes the images
    assert np.array_equal(pixels(again), pixels(base))  # and leaves no trace
    assert not np.array_equal(pixels(base[:1]), pixels(base[1:2]))  # seeds differ


def test_loras_are_removed_when_generation_fails(settings, tmp_path, monkeypatch):
    model = ModelConfig(name_or_path="tiny:sd15", arch="sd15")
    base = generate_images(model, [], ["a cat"], [1], settings)
    adapter = next(iter(generation._LOADED.values()))
    lora = save_random_lora(adapter.pipeline(), tmp_path / "l.safetensors", adapter.lora_targets(False), seed=4)
    original = type(adapter).generate

    def explode(self, requests):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(adapter), "generate", explode)
    with pytest.raises(RuntimeError):
        generate_images(model, [LoraRef(path=str(lora))], ["a cat"], [1], settings)
    monkeypatch.setattr(type(adapter), "generate", original)
    assert np.array_equal(pixels(generate_images(model, [], ["a cat"], [1], settings)), pixels(base))


def test_another_model_replaces_the_loaded_one(settings):
    generate_images(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), [], ["p"], [0], settings)
    generate_images(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), [], ["p"], [0],
                    GenerationSettings(**{**settings.__dict__, "sampler": "flowmatch"}))
    assert len(generation._LOADED) == 1
    release_models()
    assert generation._LOADED == {}
