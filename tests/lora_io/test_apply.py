"""LoRA stacks on a loaded model: h = W x + sum_i w_i dW_i x for every network type, weights of any sign,
beside an adapter that is being trained, and removed without a trace."""

import pytest
import torch

from toolkit.errors import EaselError
from toolkit.lora_io import apply_loras, loaded_loras, merge_duplicates, remove_loras
from toolkit.lora_io.files import LoraFile
from tests.lora_io.helpers import save_lora
from toolkit.lora_io.keys import LoraModule
from toolkit.lora_io.model import delta_weight

from tests.lora_io.helpers import random_lora

LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


def _layer_input(adapter) -> tuple[torch.nn.Module, torch.Tensor]:
    layer = adapter.denoiser.get_submodule(LAYER)
    return layer, torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))


def _lora(adapter, kind: str, seed: int, **kwargs) -> LoraFile:
    return LoraFile.from_state_dict(random_lora(adapter.components(), {"unet": ["to_q", "to_v"]}, kind=kind, seed=seed,
                                                **kwargs), "sd15")


@pytest.mark.parametrize("kind", ["lora", "loha", "lokr"])
def test_layer_output_is_base_plus_weighted_updates(kind, adapters):
    adapter = adapters["sd15"]
    layer, x = _layer_input(adapter)
    base = layer(x)
    first, second = _lora(adapter, kind, 1), _lora(adapter, "lora", 2)
    names = apply_loras(adapter, [(first, -0.7), (second, 1.5)])
    try:
        assert names == ["easel_gen_0", "easel_gen_1"] and loaded_loras(adapter.pipeline()) == names
        out = adapter.denoiser.get_submodule(LAYER)(x)
    finally:
        remove_loras(adapter)
    key = f"unet.{LAYER}"
    expected = base + x @ (-0.7 * delta_weight(first.modules[key]) + 1.5 * delta_weight(second.modules[key])).T
    assert torch.allclose(out, expected, atol=1e-4)
    assert torch.equal(adapter.denoiser.get_submodule(LAYER)(x), base)
    assert loaded_loras(adapter.pipeline()) == []


def test_zero_weight_and_duplicates(adapters, tmp_path):
    adapter = adapters["sd15"]
    layer, x = _layer_input(adapter)
    base = layer(x)
    path = save_lora(_lora(adapter, "lora", 3).state_dict(), tmp_path / "a.safetensors", arch="sd15")
    assert merge_duplicates([(path, 0.5), (str(path), 0.25)]) == [(path.resolve(), 0.75)]
    apply_loras(adapter, [(path, 0.0)])
    try:
        assert torch.allclose(adapter.denoiser.get_submodule(LAYER)(x), base, atol=1e-6)
    finally:
        remove_loras(adapter)


def test_a_trained_adapter_stays_active_and_untouched(adapters):
    """An adapter the trainer put on the model (here a plain PEFT one) keeps working beside the stack."""
    from peft import LoraConfig, inject_adapter_in_model

    adapter = adapters["sd15"]
    unet = adapter.denoiser
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q"], init_lora_weights=False), unet, adapter_name="default")
    try:
        layer, x = _layer_input(adapter)
        trained = layer(x)
        lora = _lora(adapter, "lora", 4)
        apply_loras(adapter, [(lora, 1.0)])
        stacked = unet.get_submodule(LAYER)(x)
        assert set(unet.get_submodule(LAYER).active_adapters) == {"default", "easel_gen_0"}
        delta = delta_weight(lora.modules[f"unet.{LAYER}"])
        assert torch.allclose(stacked, trained + x @ delta.T, atol=1e-4)
        remove_loras(adapter)
        assert unet.get_submodule(LAYER).active_adapters == ["default"]
        assert torch.equal(unet.get_submodule(LAYER)(x), trained)
    finally:
        from diffusers.utils.peft_utils import recurse_remove_peft_layers

        recurse_remove_peft_layers(unet)
        del unet.peft_config


def test_a_file_for_another_model_is_refused_before_anything_changes(adapters, tmp_path):
    sdxl = adapters["sdxl"]
    path = save_lora(random_lora(sdxl.components(), {"unet": ["to_q"]}), tmp_path / "xl.safetensors", arch="sdxl")
    adapter = adapters["sd15"]
    with pytest.raises(EaselError, match="does not fit this sd15 model"):
        apply_loras(adapter, [(path, 1.0)])
    assert loaded_loras(adapter.pipeline()) == []
    with pytest.raises(EaselError, match="does not exist"):
        apply_loras(adapter, [(tmp_path / "missing.safetensors", 1.0)])


def test_dora_applies_through_peft(adapters):
    """DoRA: the weight's rows rescaled to the stored magnitudes, W' = m (W + dW) / ||W + dW||."""
    adapter = adapters["sd15"]
    layer, x = _layer_input(adapter)
    base = layer(x)
    lora = _lora(adapter, "lora", 5, dora=True)
    module = lora.modules[f"unet.{LAYER}"]
    apply_loras(adapter, [(lora, 1.0)])
    try:
        out = adapter.denoiser.get_submodule(LAYER)(x)
    finally:
        remove_loras(adapter)
    plain = LoraModule(module.component, module.name, {k: v for k, v in module.tensors.items() if k != "dora_scale"})
    weight = layer.weight + delta_weight(plain)
    directed = weight * (module.tensors["dora_scale"] / weight.norm(dim=1))[:, None]
    assert torch.allclose(out, torch.nn.functional.linear(x, directed, layer.bias), atol=1e-4)
    assert not torch.allclose(out, base, atol=1e-3)
