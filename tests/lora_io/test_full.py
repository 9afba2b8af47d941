"""Full modules (``diff`` / ``diff_b``: ai-toolkit's full_if_contains, LyCORIS's "full") in files, stacks, bakes and
merges: every format keeps them exactly, and a stack adds ``w * (diff x + diff_b)`` as the merged weight would."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tests.lora_io.helpers import image, load_lora, max_diff, random_lora, save_lora
from toolkit.lora_io import apply_loras, bake_loras, remove_loras
from toolkit.lora_io.apply import loaded_loras
from toolkit.lora_io.files import LoraFile
from toolkit.lora_io.model import delta_weight
from toolkit.lora_io.ops import RankRule, merge_loras, resize_lora, scale_module

LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"


def _mixed(adapter, seed: int = 1) -> dict[str, torch.Tensor]:
    """Full differences on the attention outputs, a LoRA on to_q."""
    components = adapter.components()
    return {**random_lora(components, {"unet": ["to_out.0"]}, kind="full", seed=seed),
            **random_lora(components, {"unet": ["to_q"]}, seed=seed + 1)}


@pytest.mark.parametrize("fmt,key", [("kohya", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"),
                                     ("comfy", "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0"),
                                     ("diffusers", f"unet.{LAYER}")])
def test_every_format_writes_diff_keys_and_reads_them_back_exactly(fmt, key, adapters, tmp_path):
    adapter = adapters["sd15"]
    state = _mixed(adapter)
    path = save_lora(state, tmp_path / f"{fmt}.safetensors", arch="sd15", format=fmt)
    with safe_open(str(path), "pt") as handle:
        keys = set(handle.keys())
    assert {f"{key}.diff", f"{key}.diff_b"} <= keys and f"{key}.alpha" not in keys
    loaded = load_lora(path, adapter=adapter)
    assert loaded.modules[f"unet.{LAYER}"].kind == "full"
    for name, value in state.items():
        if name.endswith((".diff", ".diff_b")):
            assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.summary()["full_modules"] == len([k for k in state if k.endswith(".diff")])


def test_a_stack_adds_the_weighted_difference_and_removing_it_restores_the_layer(adapters):
    adapter = adapters["sd15"]
    layer = adapter.denoiser.get_submodule(LAYER)
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    base = layer(x)
    lora = LoraFile.from_state_dict(_mixed(adapter), "sd15")
    apply_loras(adapter, [(lora, -0.6)])
    try:
        assert loaded_loras(adapter.pipeline()) == ["easel_gen_0"]
        out = adapter.denoiser.get_submodule(LAYER)(x)
    finally:
        remove_loras(adapter)
    module = lora.modules[f"unet.{LAYER}"]
    expected = base - 0.6 * (x @ module.tensors["diff"].T + module.tensors["diff_b"])
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(adapter.denoiser.get_submodule(LAYER)(x), base) and loaded_loras(adapter.pipeline()) == []


def test_baking_adds_the_difference_to_the_weights_and_gives_the_stacks_image(adapters, new_adapter, tmp_path):
    adapter = adapters["sd15"]
    path = save_lora(_mixed(adapter, seed=5), tmp_path / "full.safetensors", arch="sd15")
    before = image(adapter)
    apply_loras(adapter, [(path, 0.9)])
    try:
        applied = image(adapter)
    finally:
        remove_loras(adapter)
    assert max_diff(applied, before) > 1
    baked = new_adapter("sd15")
    weight = baked.denoiser.get_submodule(LAYER).weight.detach().clone()
    bake_loras(baked, [(path, 0.9)])
    module = load_lora(path, adapter=baked).modules[f"unet.{LAYER}"]
    assert torch.allclose(baked.denoiser.get_submodule(LAYER).weight, weight + 0.9 * module.tensors["diff"], atol=1e-6)
    assert max_diff(image(baked), applied) <= 1.0


def test_merges_keep_full_modules_whole_and_scaling_scales_the_difference(adapters):
    adapter = adapters["sd15"]
    first = LoraFile.from_state_dict(_mixed(adapter, seed=1), "sd15")
    second = LoraFile.from_state_dict(random_lora(adapter.components(), {"unet": ["to_out.0"]}, seed=9), "sd15")
    merged, report = merge_loras([(first, 0.5), (second, 2.0)], "svd", RankRule(rank=2))
    key = f"unet.{LAYER}"
    expected = 0.5 * first.modules[key].tensors["diff"] + 2.0 * delta_weight(second.modules[key])
    assert merged[key].kind == "full" and torch.allclose(merged[key].tensors["diff"], expected, atol=1e-6)
    assert torch.allclose(merged[key].tensors["diff_b"], 0.5 * first.modules[key].tensors["diff_b"])
    assert merged[f"unet.{LAYER.replace('to_out.0', 'to_q')}"].rank == 2  # the low-rank modules are still reduced
    resized, _ = resize_lora(first, RankRule(rank=1))
    assert torch.equal(resized[key].tensors["diff"], first.modules[key].tensors["diff"])
    scaled = scale_module(first.modules[key], -2.0, "alpha")
    assert torch.equal(scaled.tensors["diff_b"], -2.0 * first.modules[key].tensors["diff_b"])
