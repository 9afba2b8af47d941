"""FLUX.2's original (Black Forest Labs) transformer layout, as its single files and ComfyUI use it: the inverse of
diffusers' ``convert_flux2_transformer_checkpoint_to_diffusers``."""

from __future__ import annotations

import re
from typing import Any

RENAMES = {
    "x_embedder.": "img_in.", "context_embedder.": "txt_in.",
    "time_guidance_embed.timestep_embedder.linear_1.": "time_in.in_layer.",
    "time_guidance_embed.timestep_embedder.linear_2.": "time_in.out_layer.",
    "time_guidance_embed.guidance_embedder.linear_1.": "guidance_in.in_layer.",
    "time_guidance_embed.guidance_embedder.linear_2.": "guidance_in.out_layer.",
    "double_stream_modulation_img.linear.": "double_stream_modulation_img.lin.",
    "double_stream_modulation_txt.linear.": "double_stream_modulation_txt.lin.",
    "single_stream_modulation.linear.": "single_stream_modulation.lin.", "proj_out.": "final_layer.linear.",
}
DOUBLE = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
          "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale", "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
          "attn.to_out.0.weight": "img_attn.proj.weight", "attn.to_add_out.weight": "txt_attn.proj.weight",
          "ff.linear_in.weight": "img_mlp.0.weight", "ff.linear_out.weight": "img_mlp.2.weight",
          "ff_context.linear_in.weight": "txt_mlp.0.weight", "ff_context.linear_out.weight": "txt_mlp.2.weight"}
SINGLE = {"attn.to_qkv_mlp_proj.weight": "linear1.weight", "attn.to_out.weight": "linear2.weight",
          "attn.norm_q.weight": "norm.query_norm.scale", "attn.norm_k.weight": "norm.key_norm.scale"}
QKV = {"img_attn.qkv.weight": ("attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight"),
       "txt_attn.qkv.weight": ("attn.add_q_proj.weight", "attn.add_k_proj.weight", "attn.add_v_proj.weight")}


def flux2_to_original(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A diffusers Flux2Transformer2DModel state dict -> the original layout (fused qkv, ``double_blocks``, ...)."""
    import torch

    out: dict[str, Any] = {}
    fused = {name for parts in QKV.values() for name in parts}
    for key, value in state_dict.items():
        double = re.match(r"transformer_blocks\.(\d+)\.(.+)$", key)
        single = re.match(r"single_transformer_blocks\.(\d+)\.(.+)$", key)
        if double:
            if double.group(2) not in fused:
                out[f"double_blocks.{double.group(1)}.{DOUBLE[double.group(2)]}"] = value
        elif single:
            out[f"single_blocks.{single.group(1)}.{SINGLE[single.group(2)]}"] = value
        elif key.startswith("norm_out.linear."):
            scale, shift = value.chunk(2, dim=0)
            out[key.replace("norm_out.linear.", "final_layer.adaLN_modulation.1.")] = torch.cat([shift, scale], dim=0)
        else:
            prefix = next(p for p in RENAMES if key.startswith(p))
            out[RENAMES[prefix] + key[len(prefix):]] = value
    blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"transformer_blocks\.(\d+)\.", key))}
    for index in sorted(blocks):
        for target, parts in QKV.items():
            out[f"double_blocks.{index}.{target}"] = torch.cat([state_dict[f"transformer_blocks.{index}.{p}"] for p in parts])
    return out
