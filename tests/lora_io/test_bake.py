"""LoRAs baked into the base model give the image the applied LoRAs give (within 1/255), also after saving."""

import pytest

from toolkit.config.blocks import ModelConfig
from toolkit.lora_io import apply_loras, bake_loras, remove_loras
from toolkit.lora_io.files import save_lora
from toolkit.models.loading import cache_dir, load_adapter

from tests.lora_io.helpers import image, max_diff, random_lora

MIXES = {"sd15": ("lora", "loha"), "sdxl": ("lora", "lora"), "zimage": ("lora", "lokr")}


@pytest.mark.parametrize("arch", sorted(MIXES))
def test_baked_model_matches_applied_loras(arch, adapters, new_adapter, tmp_path, registry):
    adapter = adapters[arch]
    targets = adapter.lora_targets(train_text_encoder=True)
    paths = [save_lora(random_lora(adapter.components(), targets, kind=kind, seed=10 + i), tmp_path / f"{i}.safetensors", arch=arch)
             for i, kind in enumerate(MIXES[arch])]
    loras = [(paths[0], 0.8), (paths[1], -0.5)]
    base = image(adapter)
    apply_loras(adapter, loras)
    try:
        applied = image(adapter)
    finally:
        remove_loras(adapter)
    assert max_diff(applied, base) > 8
    baked = new_adapter(arch)
    bake_loras(baked, loras)
    assert not any(type(m).__module__.startswith(("peft", "lycoris")) for c in baked.components().values() for m in c.modules())
    assert max_diff(image(baked), applied) <= 1.0
    folder = tmp_path / "merged"
    baked.pipeline().save_pretrained(str(folder), safe_serialization=True)
    reloaded = load_adapter(ModelConfig(name_or_path=str(folder), arch=arch), registry, device="cpu", dtype="fp32")
    assert max_diff(image(reloaded), applied) <= 1.0


def test_single_file_checkpoint_needs_the_adapter_export(adapters, tmp_path):
    from toolkit.errors import EaselError

    from jobs.convert import save_single_file

    with pytest.raises(EaselError, match="single-file checkpoint"):
        save_single_file(adapters["zimage"], tmp_path / "z.safetensors", None)


def test_single_file_checkpoint_loads_back(new_adapter, tmp_path, registry, monkeypatch):
    """With an export hook (the architecture's LDM layout; here the tiny models' converter) the baked model
    is written as one checkpoint that loads through diffusers' single-file loading and gives the same image."""
    from extensions.sd15.adapter import SD15Adapter
    from jobs.convert import save_single_file
    from toolkit.testing.ldm import sd_pipeline_to_ldm

    monkeypatch.setattr(SD15Adapter, "single_file_state_dict", lambda self: sd_pipeline_to_ldm(self.pipe), raising=False)
    baked = new_adapter("sd15")
    state = random_lora(baked.components(), baked.lora_targets(True), seed=21)
    path = save_lora(state, tmp_path / "l.safetensors", arch="sd15")
    bake_loras(baked, [(path, 0.9)])
    expected = image(baked)
    save_single_file(baked, tmp_path / "merged.safetensors", None)
    config = ModelConfig(name_or_path=str(tmp_path / "merged.safetensors"), arch="sd15",
                         model_kwargs={"config": str(cache_dir("tiny") / "sd15")})
    assert max_diff(image(load_adapter(config, registry, device="cpu", dtype="fp32")), expected) <= 1.0
