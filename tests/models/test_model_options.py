"""ai-toolkit's model options: vae_dtype / te_dtype, unet_path, lora_path (merged before training) and
use_text_encoder_1 / _2 (which text encoders get the adapter)."""

from __future__ import annotations

import torch

from toolkit.config.blocks import ModelConfig
from toolkit.lora_io.model import base_layer, delta_weight
from toolkit.models.loading import load_adapter

from tests.lora_io.helpers import random_lora, save_lora


def _load(registry, arch: str = "sd15", **fields):
    return load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch, **fields), registry, device="cpu", dtype="fp32")


def test_vae_and_text_encoder_precisions(registry):
    adapter = _load(registry, vae_dtype="bf16", te_dtype="fp16")
    assert next(adapter.vae.parameters()).dtype == torch.bfloat16
    assert next(adapter.text_encoders["text_encoder"].parameters()).dtype == torch.float16
    assert next(adapter.denoiser.parameters()).dtype == torch.float32
    assert adapter.encode_images(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 8, 8)


def test_unet_path_replaces_only_the_denoiser(registry, tmp_path):
    base = _load(registry)
    unet = base.denoiser
    with torch.no_grad():
        unet.conv_in.weight.add_(1.0)
    unet.save_pretrained(tmp_path / "unet", safe_serialization=True)
    loaded = _load(registry, unet_path=str(tmp_path / "unet"))
    assert torch.equal(loaded.denoiser.conv_in.weight, unet.conv_in.weight)
    fresh = _load(registry)
    assert not torch.equal(loaded.denoiser.conv_in.weight, fresh.denoiser.conv_in.weight)
    for name, encoder in fresh.text_encoders.items():
        assert all(torch.equal(a, b) for a, b in zip(encoder.parameters(), loaded.text_encoders[name].parameters()))


def test_lora_path_is_merged_into_the_base_weights(registry, tmp_path):
    plain = _load(registry)
    state = random_lora(plain.components(), {"unet": ["to_q"]}, seed=2)
    path = save_lora(state, tmp_path / "l.safetensors", arch="sd15", dtype="fp32")
    merged = _load(registry, lora_path=str(path))
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    from toolkit.lora_io.keys import group_modules

    module = group_modules(state)[f"unet.{name}"]
    layer = merged.denoiser.get_submodule(name)
    assert layer is base_layer(layer), "no adapter layer is left: the LoRA is part of the weights"
    expected = plain.denoiser.get_submodule(name).weight + delta_weight(module)
    assert torch.allclose(layer.weight, expected, atol=1e-5)


def test_use_text_encoder_switches_pick_the_adapted_encoders(registry):
    assert set(_load(registry, "sdxl").lora_targets(True)) == {"unet", "text_encoder", "text_encoder_2"}
    assert set(_load(registry, "sdxl", use_text_encoder_1=False).lora_targets(True)) == {"unet", "text_encoder_2"}
    assert set(_load(registry, "sdxl", use_text_encoder_2=False).lora_targets(True)) == {"unet", "text_encoder"}


def test_unet_layers_map_to_kohyas_blocks_and_z_image_names_its_transformer_blocks(registry):
    unet = _load(registry)
    blocks = {path: unet.lora_block(path) for path in (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "down_blocks.1.attentions.1.proj_in",
        "down_blocks.2.resnets.0.conv1", "mid_block.attentions.0.proj_out", "up_blocks.1.attentions.2.proj_out",
        "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2", "time_embedding.linear_1")}
    assert list(blocks.values()) == [1, 5, 7, 12, 18, 24, None]
    layout = _load(registry, "zimage").network_layout()
    assert (layout.denoiser, layout.transformer_blocks) == ("transformer", ("layers",))
