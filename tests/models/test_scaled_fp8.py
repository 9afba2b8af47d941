"""ComfyUI's fp8 single files: scaled ones (``scale_weight`` / ``weight_scale``) and plain float8 casts load, through
the real loading code, as the bf16/fp32 transformer within fp8's rounding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from toolkit.config.blocks import ModelConfig
from toolkit.models.loading import load_adapter
from toolkit.models.scaled_fp8 import dequantized, is_scaled
from toolkit.models.tiny import cache_dir

FP8 = torch.float8_e4m3fn


def _fp8_copy(source: Path, target: Path, scale_key: str | None) -> None:
    """``source`` with every 2-D+ weight in float8 (scaled per layer to fp8's range when ``scale_key`` is given)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in load_file(str(source)).items():
        if not (key.endswith(".weight") and value.dim() >= 2):
            out[key] = value
            continue
        if scale_key is None:
            out[key] = value.to(FP8)
            continue
        scale = value.float().abs().max().clamp(min=1e-12) / 448.0
        out[key] = (value.float() / scale).to(FP8)
        out[key.removesuffix(".weight") + scale_key] = scale.reshape(())
    if scale_key == ".scale_weight":
        out["scaled_fp8"] = torch.empty(0, dtype=FP8)
        out[next(k for k in out if k.endswith(".weight")).removesuffix(".weight") + ".scale_input"] = torch.tensor(1.0)
    save_file(out, str(target))


@pytest.mark.parametrize("arch,scale_key", [("zimage", ".scale_weight"), ("zimage", ".weight_scale"), ("zimage", None),
                                            ("qwen_image", ".scale_weight")],
                         ids=["zimage-scaled_fp8", "zimage-weight_scale", "zimage-plain", "qwen_image-scaled_fp8"])
def test_fp8_single_files_load_as_the_transformer(arch: str, scale_key: str | None, registry: Any, tmp_path: Path) -> None:
    reference = load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch), registry, device="cpu", dtype="fp32")
    folder = cache_dir("tiny") / arch
    source = folder / reference.arch.spec.tiny.single_file
    fp8 = tmp_path / f"{arch}_fp8.safetensors"
    _fp8_copy(source, fp8, scale_key)
    assert is_scaled(fp8) == (scale_key is not None)
    if scale_key is not None:
        assert not any(key.endswith((scale_key, ".scale_input")) or key == "scaled_fp8" for key in dequantized(fp8, torch.float32))
    config = ModelConfig(name_or_path=str(fp8), arch=arch, model_kwargs={"config": str(folder)})
    loaded = load_adapter(config, registry, device="cpu", dtype="fp32")
    expected, got = reference.denoiser.state_dict(), loaded.denoiser.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        error = (got[key].float() - value.float()).abs().max()
        assert error <= 0.07 * value.float().abs().max() + 1e-6, key  # e4m3's 3 mantissa bits: within 1/16
    assert any(not torch.equal(got[k], expected[k]) for k in expected), "the weights went through fp8"
