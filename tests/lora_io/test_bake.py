"""LoRAs baked into the base model give the image the applied LoRAs give (within 1/255), also after saving."""

import pytest
import torch

from toolkit.config.blocks import ModelConfig
from toolkit.lora_io import apply_loras, bake_loras, remove_loras
from tests.lora_io.helpers import save_lora
from toolkit.models.loading import load_adapter
from toolkit.models.tiny import cache_dir

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


def test_sdxl_single_file_is_what_diffusers_single_file_conversion_reads(new_adapter, tmp_path):
    """The baked SDXL checkpoint (SGM layout, CLIP-G in OpenCLIP names) converts back, through diffusers' own
    single-file conversion functions, to exactly the baked pipeline's weights, component by component."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from safetensors.torch import load_file

    from toolkit.models.saving import save_single_file

    baked = new_adapter("sdxl")
    path = save_lora(random_lora(baked.components(), baked.lora_targets(True), seed=22), tmp_path / "l.safetensors", arch="sdxl")
    bake_loras(baked, [(path, 0.9)])
    save_single_file(baked, tmp_path / "merged.safetensors", None)
    checkpoint = load_file(str(tmp_path / "merged.safetensors"))
    pipe = baked.pipeline()
    te2 = pipe.text_encoder_2
    back = {
        "unet": convert_ldm_unet_checkpoint(checkpoint, dict(pipe.unet.config)),
        "vae": convert_ldm_vae_checkpoint(checkpoint, dict(pipe.vae.config)),
        "text_encoder": convert_ldm_clip_checkpoint(checkpoint),
        "text_encoder_2": convert_open_clip_checkpoint(te2, checkpoint, prefix="conditioner.embedders.1.model."),
    }
    for name, converted in back.items():
        state = getattr(pipe, name).state_dict()
        if not any(k.startswith("text_model.") for k in state):
            converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
        assert set(converted) == set(state), (name, sorted(set(converted) ^ set(state))[:6])
        assert all(torch.equal(converted[k], state[k]) for k in state), name


@pytest.mark.parametrize("arch", ["sd15", "zimage"])
def test_single_file_checkpoint_loads_back(arch, new_adapter, tmp_path, registry):
    """The baked model written in its original single-file layout (SD: LDM; Z-Image: its transformer) loads
    through diffusers' single-file loading and gives the same image."""
    from toolkit.models.saving import save_single_file

    baked = new_adapter(arch)
    state = random_lora(baked.components(), {baked.denoiser_name: baked.lora_targets(False)[baked.denoiser_name]}, seed=21)
    path = save_lora(state, tmp_path / "l.safetensors", arch=arch)
    bake_loras(baked, [(path, 0.9)])
    expected = image(baked)
    save_single_file(baked, tmp_path / "merged.safetensors", None)
    config = ModelConfig(name_or_path=str(tmp_path / "merged.safetensors"), arch=arch,
                         model_kwargs={"config": str(cache_dir("tiny") / arch)})
    assert max_diff(image(load_adapter(config, registry, device="cpu", dtype="fp32")), expected) <= 1.0
