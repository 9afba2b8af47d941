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
