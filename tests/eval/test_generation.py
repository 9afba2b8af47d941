"""generate_images: one base model for all variants, LoRAs applied and removed around each call.

The model adapters and LoRA loading (issue 4) are replaced by a recording fake here, at the module
boundary generate_images imports from; the lead's end-to-end test covers the real ones.
"""

import importlib.util
import sys
import types

import pytest
from PIL import Image

from toolkit.config.blocks import ModelConfig
from toolkit.config.generate import LoraRef
from toolkit.eval import generation
from toolkit.eval.generation import GenerationSettings, generate_images, release_models


class FakeAdapter:
    def __init__(self):
        self.loras: list = []
        self.calls: list = []

    def generate(self, requests):
        self.calls.append((list(self.loras), [(r.prompt, r.seed, r.width, r.height, r.steps, r.sampler, r.guidance_scale) for r in requests]))
        if any(r.prompt == "explode" for r in requests):
            raise RuntimeError("boom")
        return [Image.new("RGB", (r.width, r.height)) for r in requests]


@pytest.fixture
def fake(monkeypatch):
    log = {"loads": []}
    loading = types.ModuleType("toolkit.models.loading")

    def load_adapter(config, registry, device=None, dtype=None):
        log["loads"].append((config.name_or_path, str(device), str(dtype)))
        log["adapter"] = FakeAdapter()
        return log["adapter"]

    loading.load_adapter = load_adapter
    loras = types.ModuleType("toolkit.sampling.loras")
    loras.apply_loras = lambda adapter, pairs: adapter.loras.extend(pairs)
    loras.remove_loras = lambda adapter: adapter.loras.clear()
    monkeypatch.setitem(sys.modules, "toolkit.models.loading", loading)
    if importlib.util.find_spec("toolkit.sampling") is None:
        monkeypatch.setitem(sys.modules, "toolkit.sampling", types.ModuleType("toolkit.sampling"))
    monkeypatch.setitem(sys.modules, "toolkit.sampling.loras", loras)
    yield log
    release_models()


SETTINGS = GenerationSettings(registry=None, device="cpu", width=24, height=16, steps=3, guidance_scale=2.0, sampler="euler", batch_size=2)


def test_base_model_loads_once_and_loras_swap_per_variant(fake):
    model = ModelConfig(name_or_path="tiny:sd15", arch="sd15")
    base = generate_images(model, [], ["p0", "p1"], [5, 6], SETTINGS)
    mixed = generate_images(model, [LoraRef(path="a.safetensors", weight=0.6), LoraRef(path="b.safetensors", weight=0.4)], ["p0"], [5], SETTINGS)
    assert fake["loads"] == [("tiny:sd15", "cpu", "torch.float32")]
    assert len(base) == 4 and all(image.size == (24, 16) for image in base) and len(mixed) == 1
    calls = fake["adapter"].calls
    assert calls[0] == ([], [("p0", 5, 24, 16, 3, "euler", 2.0), ("p0", 6, 24, 16, 3, "euler", 2.0)])
    assert calls[1] == ([], [("p1", 5, 24, 16, 3, "euler", 2.0), ("p1", 6, 24, 16, 3, "euler", 2.0)])
    assert calls[2][0] == [("a.safetensors", 0.6), ("b.safetensors", 0.4)]
    assert fake["adapter"].loras == []


def test_loras_are_removed_when_generation_fails(fake):
    model = ModelConfig(name_or_path="tiny:sd15", arch="sd15")
    with pytest.raises(RuntimeError):
        generate_images(model, [LoraRef(path="a.safetensors")], ["explode"], [0], SETTINGS)
    assert fake["adapter"].loras == []


def test_another_model_replaces_the_loaded_one(fake):
    generate_images(ModelConfig(name_or_path="one", arch="sd15"), [], ["p"], [0], SETTINGS)
    generate_images(ModelConfig(name_or_path="two", arch="sd15", dtype="fp16"), [], ["p"], [0], SETTINGS)
    assert [load[:2] for load in fake["loads"]] == [("one", "cpu"), ("two", "cpu")]
    assert fake["loads"][1][2] == "torch.float16"
    assert len(generation._LOADED) == 1
    release_models()
    assert generation._LOADED == {}
