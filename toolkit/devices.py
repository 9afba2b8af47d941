"""Device and dtype names from configs -> torch objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto`` picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def resolve_dtype(name: str) -> "torch.dtype":
    """``fp32`` / ``fp16`` / ``bf16`` -> torch dtype."""
    import torch

    return getattr(torch, _DTYPES[name])


def generation_target(device_name: str, dtype: str | None) -> tuple["torch.device", str]:
    """Device and precision for making images: ``dtype``, or the device's default (fp32 on the CPU, fp16 on
    mps, bf16 on GPUs). On CUDA cuDNN is made deterministic: same seed, same machine, same bytes."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device, dtype or {"cpu": "fp32", "mps": "fp16"}.get(device.type, "bf16")
