"""Module names of a diffusers UNet2DConditionModel <-> the SGM / LDM (CompVis) UNet layout.

kohya names SDXL LoRA modules after the SGM UNet (``input_blocks.4.1.transformer_blocks.0.attn1.to_q``)
and ComfyUI names every SD UNet that way. The mapping depends only on the UNet config:
``layers_per_block`` and which blocks have attention (facts from the UNet's block layout, the same
ones diffusers' single-file conversion reads):

- ``conv_in`` = ``input_blocks.0.0``; down block ``b`` layer ``j`` = ``input_blocks.{1 + b(L+1) + j}``,
  its resnet at ``.0``, attention at ``.1``; its downsampler = ``input_blocks.{(b+1)(L+1)}.0.op``;
- ``mid_block``: resnets.0 = ``middle_block.0``, attentions.0 = ``middle_block.1``, resnets.1 = ``middle_block.2``;
- up block ``b`` layer ``j`` = ``output_blocks.{b(L+1) + j}`` (``.0`` resnet, ``.1`` attention); its
  upsampler = ``output_blocks.{b(L+1) + L}.{2 if the block has attention else 1}.conv``;
- resnet parts: conv1 = in_layers.2, conv2 = out_layers.3, time_emb_proj = emb_layers.1,
  conv_shortcut = skip_connection, norm1/norm2 = in_layers.0/out_layers.0;
- time_embedding.linear_1/2 = time_embed.0/2, add_embedding.linear_1/2 = label_emb.0.0/0.2,
  conv_norm_out = out.0, conv_out = out.2. Attention internals keep their names.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from toolkit.registry import ModuleNames

FIXED = {
    "conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0", "conv_out": "out.2",
}
RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
SGM_ROOTS = ("input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out")
_FIXED_BACK = {value: key for key, value in FIXED.items()}
_RESNET_BACK = {value: key for key, value in RESNET.items()}


def _get(config: Any, name: str) -> Any:
    return config[name] if isinstance(config, Mapping) else getattr(config, name)


def rename_prefix(rest: str, table: Mapping[str, str]) -> str:
    """``rest`` with its first matching dotted prefix from ``table`` renamed."""
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def _has_attention(block_type: str) -> bool:
    return "CrossAttn" in block_type or "Attn" in block_type


def to_sgm(name: str, config: Any) -> str:
    """A diffusers UNet module name -> its SGM name; raises KeyError for names outside the layout."""
    fixed = rename_prefix(name, FIXED)
    if fixed != name:
        return fixed
    layers = int(_get(config, "layers_per_block"))
    parts = name.split(".")
    if parts[0] == "mid_block" and len(parts) >= 3:
        rest = ".".join(parts[3:])
        if parts[1] == "attentions":
            return ".".join(filter(None, ["middle_block.1", rest]))
        return ".".join(filter(None, [f"middle_block.{2 * int(parts[2])}", rename_prefix(rest, RESNET)]))
    if parts[0] not in ("down_blocks", "up_blocks") or len(parts) < 4:
        raise KeyError(f"'{name}' is not a UNet2DConditionModel module")
    block, kind, layer, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return ".".join(filter(None, [f"input_blocks.{(block + 1) * (layers + 1)}.0.op", rest.removeprefix("conv").lstrip(".")]))
        slot = f"input_blocks.{1 + block * (layers + 1) + layer}"
    else:
        if kind == "upsamplers":
            index = 2 if _has_attention(_get(config, "up_block_types")[block]) else 1
            return ".".join(filter(None, [f"output_blocks.{block * (layers + 1) + layers}.{index}.conv",
                                          rest.removeprefix("conv").lstrip(".")]))
        slot = f"output_blocks.{block * (layers + 1) + layer}"
    if kind == "attentions":
        return ".".join(filter(None, [f"{slot}.1", rest]))
    if kind == "resnets":
        return ".".join(filter(None, [f"{slot}.0", rename_prefix(rest, RESNET)]))
    raise KeyError(f"'{name}' is not a UNet2DConditionModel module")


def is_sgm(name: str) -> bool:
    """Whether a module name is in the SGM layout."""
    return name.split(".")[0] in SGM_ROOTS


def from_sgm(name: str, config: Any) -> str:
    """An SGM UNet module name -> its diffusers name (the inverse of ``to_sgm``); KeyError when it has none."""
    fixed = rename_prefix(name, _FIXED_BACK)
    if fixed != name:
        return fixed
    layers = int(_get(config, "layers_per_block"))
    middle = re.fullmatch(r"middle_block\.(\d+)(?:\.(.*))?", name)
    if middle is not None:
        slot, rest = int(middle.group(1)), middle.group(2) or ""
        if slot == 1:
            return ".".join(filter(None, ["mid_block.attentions.0", rest]))
        return ".".join(filter(None, [f"mid_block.resnets.{slot // 2}", rename_prefix(rest, _RESNET_BACK)]))
    match = re.fullmatch(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)(?:\.(.*))?", name)
    if match is None:
        raise KeyError(f"'{name}' is not an SGM UNet module")
    root, slot, part, rest = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4) or ""
    if root == "input_blocks":
        block, layer = divmod(slot - 1, layers + 1)
        if layer == layers:
            return ".".join(filter(None, [f"down_blocks.{block}.downsamplers.0.conv", rest.removeprefix("op").lstrip(".")]))
        return _inner(f"down_blocks.{block}", layer, part, rest)
    block, layer = divmod(slot, layers + 1)
    upsampler = 2 if _has_attention(_get(config, "up_block_types")[block]) else 1
    if layer == layers and part == upsampler and rest.split(".")[0] == "conv":
        return ".".join(filter(None, [f"up_blocks.{block}.upsamplers.0.conv", rest.removeprefix("conv").lstrip(".")]))
    return _inner(f"up_blocks.{block}", layer, part, rest)


def _inner(block: str, layer: int, part: int, rest: str) -> str:
    if part == 0:
        return ".".join(filter(None, [f"{block}.resnets.{layer}", rename_prefix(rest, _RESNET_BACK)]))
    if part == 1:
        return ".".join(filter(None, [f"{block}.attentions.{layer}", rest]))
    raise KeyError(f"'{block}' has no part {part} at layer {layer}")


SGM_NAMES = ModuleNames(to_file=to_sgm, from_file=from_sgm, recognises=is_sgm)
"""The UNet family's naming in other tools' LoRA files (``LoraProfile.denoiser_names``)."""
