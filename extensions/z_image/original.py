"""Z-Image's original (non-diffusers) transformer layout, as the published single files and ComfyUI use it."""

from __future__ import annotations

from typing import Any

def zimage_to_original(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ZImageTransformer2DModel state dict -> the original layout (fused qkv, ``x_embedder``, ...)."""
    import torch

    renames = {"all_final_layer.2-1.": "final_layer.", "all_x_embedder.2-1.": "x_embedder.", ".attention.to_out.0.": ".attention.out.",
               ".attention.norm_k.": ".attention.k_norm.", ".attention.norm_q.": ".attention.q_norm."}
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [state_dict[key.replace(".to_q.", f".{name}.")] for name in ("to_q", "to_k", "to_v")]
            out[key.replace(".attention.to_q.", ".attention.qkv.")] = torch.cat(parts, dim=0)
            continue
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key] = value
    return out
