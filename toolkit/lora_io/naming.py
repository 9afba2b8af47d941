"""Flattened module names (kohya, LyCORIS: dots replaced by ``_``) and turning them back into paths.

With a loaded model the way back is exact: every module's flattened name is looked up. Without
one, a flattened name is split at ``_`` and the pieces that belong together are re-joined from a
vocabulary of the module-name words used by diffusers and transformers (``down_blocks``,
``to_q``, ``self_attn``, ...) plus the words an architecture's profile adds, as diffusers' own
kohya converters do.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

WORDS = (
    # diffusers UNet2DConditionModel
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out", "proj_in",
    "proj_out", "conv_in", "conv_out", "conv_shortcut", "conv_norm_out", "time_emb_proj", "time_embedding",
    "linear_1", "linear_2", "add_embedding", "add_time_proj",
    # SGM / LDM UNet
    "input_blocks", "middle_block", "output_blocks", "in_layers", "out_layers", "emb_layers", "skip_connection",
    "time_embed", "label_emb",
    # transformers text encoders (CLIP, T5, Llama/Qwen style)
    "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "o_proj", "gate_proj", "up_proj",
    "down_proj", "layer_norm1", "layer_norm2", "final_layer_norm", "text_projection", "token_embedding",
    "position_embedding", "embed_tokens", "input_layernorm", "post_attention_layernorm", "q_norm", "k_norm",
    # diffusers transformers (DiT-style)
    "norm_q", "norm_k", "norm_added_q", "norm_added_k", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
    "ff_context", "single_transformer_blocks", "proj_mlp", "time_text_embed", "context_embedder", "x_embedder",
    "norm_out",
)


def flatten(name: str) -> str:
    """``a.b_c.0`` -> ``a_b_c_0`` (kohya's and LyCORIS' module names)."""
    return name.replace(".", "_")


def unflatten(flat: str, extra_words: Iterable[str] = ()) -> str:
    """Best guess of the dotted path of a flattened module name, from the vocabulary of module words."""
    words = sorted({*WORDS, *extra_words}, key=lambda w: -w.count("_"))
    by_length: dict[int, set[tuple[str, ...]]] = {}
    for word in words:
        parts = tuple(word.split("_"))
        by_length.setdefault(len(parts), set()).add(parts)
    tokens = flat.split("_")
    out: list[str] = []
    index = 0
    while index < len(tokens):
        for length in sorted(by_length, reverse=True):
            if length > 1 and tuple(tokens[index:index + length]) in by_length[length]:
                out.append("_".join(tokens[index:index + length]))
                index += length
                break
        else:
            out.append(tokens[index])
            index += 1
    return ".".join(out)


def module_index(module: "torch.nn.Module", rename: "callable | None" = None) -> dict[str, str]:
    """Flattened name -> dotted name for every module with a weight (``rename`` adds a second spelling)."""
    index: dict[str, str] = {}
    for name, child in module.named_modules():
        if not name or getattr(child, "weight", None) is None or re.search(r"\.(base_layer|lora_[AB]|lora_\w+)(\.|$)", name):
            continue
        index[flatten(name)] = name
        if rename is not None:
            try:
                index[flatten(rename(name))] = name
            except KeyError:
                pass
    return index
