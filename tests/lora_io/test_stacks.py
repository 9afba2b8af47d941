"""LoRA stacks while generating: h = W x + sum_i w_i B_i A_i x, on the tiny SD 1.5 and Z-Image models."""

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models.base import GenerateRequest, ModelAdapter
from toolkit.models.loading import load_adapter
from toolkit.lora_io import apply_loras, loaded_loras, merge_duplicates, remove_loras
from toolkit.testing.tiny import save_random_lora

CASES = {
    "sd15": ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 4),
    "zimage": ("layers.1.attention.to_v", 16),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def setup(request: Any, registry: Any, tmp_path_factory: Any) -> tuple[ModelAdapter, Path, Path, str]:
    arch = request.param
    adapter = load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch), registry, device="cpu")
    folder = tmp_path_factory.mktemp(f"loras_{arch}")
    targets = adapter.lora_targets(train_text_encoder=arch == "sd15")
    first = save_random_lora(adapter.pipeline(), folder / "first.safetensors", targets, seed=1)
    second = save_random_lora(adapter.pipeline(), folder / "second.safetensors", {adapter.denoiser_name: targets[adapter.denoiser_name][:3]}, seed=2)
    yield adapter, first, second, arch
    remove_loras(adapter)


def _layer_out(adapter: ModelAdapter, name: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return adapter.denoiser.get_submodule(name)(x)


def test_update_is_the_sum_of_weighted_low_rank_terms(setup: Any) -> None:
    adapter, first, second, arch = setup
    name, _ = CASES[arch]
    layer = adapter.denoiser.get_submodule(name)
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    base = _layer_out(adapter, name, x)
    state = load_file(first)
    prefix = f"{adapter.denoiser_name}.{name}"
    down, up = state[f"{prefix}.lora_A.weight"], state[f"{prefix}.lora_B.weight"]
    apply_loras(adapter, [(first, 1.0)])
    one = _layer_out(adapter, name, x)
    assert torch.allclose(one - base, x @ down.T @ up.T, atol=1e-5)
    apply_loras(adapter, [(second, 1.0)])
    two = _layer_out(adapter, name, x)
    apply_loras(adapter, [(first, 0.7), (second, -1.3)])
    both = _layer_out(adapter, name, x)
    assert torch.allclose(both, base + 0.7 * (one - base) - 1.3 * (two - base), atol=1e-5)
    apply_loras(adapter, [(first, 2.5)])
    assert torch.allclose(_layer_out(adapter, name, x), base + 2.5 * (one - base), atol=1e-5)
    remove_loras(adapter)
    assert loaded_loras(adapter.pipeline()) == [] and torch.equal(_layer_out(adapter, name, x), base)


def test_weight_zero_is_no_lora_and_images_change_otherwise(setup: Any) -> None:
    adapter, first, second, arch = setup
    request = GenerateRequest(prompt="a photo of a cat", width=64, height=64, steps=2, guidance_scale=1.0, seed=3,
                              sampler=adapter.arch.spec.default_sampler)
    remove_loras(adapter)
    plain = adapter.generate([request])[0].tobytes()
    apply_loras(adapter, [(first, 0.0)])
    assert adapter.generate([request])[0].tobytes() == plain
    apply_loras(adapter, [(first, 1.0)])
    assert adapter.generate([request])[0].tobytes() != plain
    remove_loras(adapter)
    assert adapter.generate([request])[0].tobytes() == plain


def test_text_encoder_lora_is_applied(setup: Any) -> None:
    adapter, first, _, arch = setup
    if arch != "sd15":
        pytest.skip("diffusers loads Z-Image LoRAs into the transformer only")
    remove_loras(adapter)
    with torch.no_grad():
        plain = adapter.encode_prompts(["a cat"])["prompt_embeds"]
        apply_loras(adapter, [(first, 1.0)])
        changed = adapter.encode_prompts(["a cat"])["prompt_embeds"]
    remove_loras(adapter)
    assert not torch.allclose(plain, changed)


def test_bad_files_are_errors(setup: Any, tmp_path: Path) -> None:
    adapter, _, _, _ = setup
    with pytest.raises(EaselError, match="does not exist"):
        apply_loras(adapter, [(tmp_path / "missing.safetensors", 1.0)])
    assert loaded_loras(adapter.pipeline()) == []


def test_repeated_files_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    assert merge_duplicates([(path, 0.5), (str(path), 0.25), (tmp_path / "b.safetensors", -1)]) == [
        (path.resolve(), 0.75), ((tmp_path / "b.safetensors").resolve(), -1.0)]


def test_applied_to_names_the_loras_on_each_component(setup: Any, tmp_path: Path) -> None:
    """What the generate job's encoder memo keys on: the files (and weights) a component holds now."""
    import os
    import shutil

    from toolkit.lora_io import load_lora
    from toolkit.lora_io.apply import applied_to

    adapter, first, second, arch = setup
    if arch != "sd15":
        pytest.skip("the text-encoder case is SD 1.5's")
    remove_loras(adapter)
    assert applied_to(adapter, "text_encoder") == () == applied_to(adapter, "unet")
    apply_loras(adapter, [(second, 1.0)])  # the UNet only
    assert applied_to(adapter, "text_encoder") == () and len(applied_to(adapter, "unet") or ()) == 1
    apply_loras(adapter, [(first, 0.5)])
    half = applied_to(adapter, "text_encoder")
    apply_loras(adapter, [(first, 1.0)])
    assert half and applied_to(adapter, "text_encoder") not in (half, None), "the weight is part of it"
    copy = tmp_path / "first.safetensors"
    shutil.copy(first, copy)
    apply_loras(adapter, [(copy, 1.0)])
    before = applied_to(adapter, "text_encoder")
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))  # the file written again
    apply_loras(adapter, [(copy, 1.0)])
    assert applied_to(adapter, "text_encoder") != before
    apply_loras(adapter, [(load_lora(first), 1.0)])
    assert applied_to(adapter, "text_encoder") is None, "an in-memory LoRA has no stable name"
    remove_loras(adapter)
    assert applied_to(adapter, "text_encoder") == ()


def test_applied_to_after_baking_is_unknown(registry: Any, tmp_path: Path) -> None:
    from toolkit.lora_io import bake_loras
    from toolkit.lora_io.apply import applied_to

    adapter = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu")
    lora = save_random_lora(adapter.pipeline(), tmp_path / "l.safetensors", adapter.lora_targets(True), seed=3)
    bake_loras(adapter, [(lora, 1.0)])
    assert applied_to(adapter, "text_encoder") is None and applied_to(adapter, "unet") is None
    remove_loras(adapter)
    assert applied_to(adapter, "text_encoder") is None, "the baked weights stay changed"
