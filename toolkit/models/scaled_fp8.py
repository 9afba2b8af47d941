"""fp8 single files as ComfyUI distributes them: weights stored in float8 with a scale per layer ("scaled fp8").

A layer's weight is ``<layer>.weight`` (float8_e4m3fn / e5m2) times ``<layer>.scale_weight`` (ComfyUI's
``scaled_fp8`` files, which also hold an empty ``scaled_fp8`` marker and sometimes ``scale_input``) or times
``<layer>.weight_scale`` (its newer quantized files, with ``comfy_quant`` entries). diffusers' ``from_single_file``
knows neither scale, so such a file is read here, each weight multiplied back out in the model's dtype, and the
state dict handed to ``from_single_file``. Plain float8 files (no scales) need nothing: diffusers casts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SCALES = (".scale_weight", ".weight_scale")
DROPPED = ("scaled_fp8", ".scale_input", ".input_scale", ".comfy_quant")
"""Keys that describe the quantization and are not weights of the model."""


def is_scaled(path: str | Path) -> bool:
    """Whether the safetensors file holds per-layer fp8 scales."""
    from safetensors import safe_open

    if not str(path).endswith(".safetensors") or not Path(path).is_file():
        return False  # not one to read here: from_single_file says what is wrong with it
    with safe_open(str(path), "pt") as handle:
        return any(key == "scaled_fp8" or key.endswith(SCALES) for key in handle.keys())


def dequantized(path: str | Path, dtype: "torch.dtype") -> "dict[str, torch.Tensor]":
    """The file's state dict with each scaled weight multiplied out in ``dtype`` and the scale entries dropped."""
    import torch
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        scales = {key[: -len(suffix)]: key for key in keys for suffix in SCALES if key.endswith(suffix)}
        for key in keys:
            if key in scales.values() or key == "scaled_fp8" or key.endswith(DROPPED):
                continue
            tensor = handle.get_tensor(key)
            layer = key.removesuffix(".weight")
            if key.endswith(".weight") and layer in scales:
                tensor = tensor.to(torch.float32) * handle.get_tensor(scales[layer]).to(torch.float32)
            out[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return out


def single_file_input(path: str | Path, dtype: "torch.dtype") -> Any:
    """What ``from_single_file`` gets: the path, or for a scaled fp8 file its dequantized state dict."""
    return dequantized(path, dtype) if is_scaled(path) else str(path)
