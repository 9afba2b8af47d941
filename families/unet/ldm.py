"""diffusers -> original (LDM / CompVis) key layout for SD-style UNets, ControlNets, VAEs and CLIP text encoders.

Used to write single-file checkpoints of the tiny models, so tests load them through diffusers'
own single-file conversion (``diffusers.loaders.single_file_utils``), which is the inverse of this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from families.unet.sgm import rename_prefix, to_sgm

if TYPE_CHECKING:
    import torch

StateDict = dict[str, "torch.Tensor"]

_VAE_FIXED = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state_dict: StateDict, config: Any, prefix: str = "model.diffusion_model.") -> StateDict:
    """A diffusers UNet state dict -> LDM keys (``input_blocks`` / ``middle_block`` / ``output_blocks``); the
    names are the SGM ones the LoRA formats use (``families.unet.sgm``)."""
    return {prefix + to_sgm(key, config): value for key, value in state_dict.items()}


def controlnet_to_ldm(state_dict: StateDict, config: Any, hint_blocks: int, prefix: str = "control_model.") -> StateDict:
    """A diffusers ``ControlNetModel`` state dict -> the original ControlNet keys: the UNet encoder in SGM names, the
    conditioning embedding as ``input_hint_block`` (convs at even indices, SiLUs between: ``conv_in`` 0, ``blocks.i``
    2 (i + 1), ``conv_out`` after the ``hint_blocks`` blocks), ``zero_convs.<n>.0`` and ``middle_block_out.0``."""

    def key(name: str) -> str:
        if name.startswith("controlnet_cond_embedding."):
            rest = name.removeprefix("controlnet_cond_embedding.")
            if rest.startswith(("conv_in.", "conv_out.")):
                layer, _, tail = rest.partition(".")
                return f"input_hint_block.{0 if layer == 'conv_in' else 2 * (hint_blocks + 1)}.{tail}"
            _, index, tail = rest.split(".", 2)
            return f"input_hint_block.{2 * (int(index) + 1)}.{tail}"
        if name.startswith("controlnet_down_blocks."):
            _, index, tail = name.split(".", 2)
            return f"zero_convs.{index}.0.{tail}"
        if name.startswith("controlnet_mid_block."):
            return "middle_block_out.0." + name.removeprefix("controlnet_mid_block.")
        return to_sgm(name, config)

    return {prefix + key(name): value for name, value in state_dict.items()}


def _vae_key(key: str, num_blocks: int) -> str:
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        return key
    parts = rest.split(".")
    if parts[0] in ("down_blocks", "up_blocks"):
        block = int(parts[1]) if side == "encoder" else num_blocks - 1 - int(parts[1])
        name = "down" if side == "encoder" else "up"
        if parts[2] in ("downsamplers", "upsamplers"):
            return f"{side}.{name}.{block}.{'downsample' if side == 'encoder' else 'upsample'}.{'.'.join(parts[4:])}"
        inner = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{name}.{block}.block.{parts[3]}.{inner}"
    if parts[0] == "mid_block":
        if parts[1] == "attentions":
            return f"{side}.mid.attn_1.{rename_prefix('.'.join(parts[3:]), _VAE_ATTENTION)}"
        return f"{side}.mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:]).replace('conv_shortcut', 'nin_shortcut')}"
    return f"{side}.{rename_prefix(rest, _VAE_FIXED)}"


def vae_to_ldm(state_dict: StateDict, num_blocks: int, prefix: str = "first_stage_model.") -> StateDict:
    """A diffusers AutoencoderKL state dict -> LDM keys; mid-block attention weights become 1x1 convs."""
    out: StateDict = {}
    for key, value in state_dict.items():
        name = _vae_key(key, num_blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[prefix + name] = value
    return out


def clip_to_ldm(state_dict: StateDict, prefix: str = "cond_stage_model.transformer.") -> StateDict:
    """A transformers CLIP text model state dict -> LDM keys (``...transformer.text_model.*``)."""
    return {prefix + (key if key.startswith("text_model.") else f"text_model.{key}"): value
            for key, value in state_dict.items()}


_OPEN_CLIP = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
              "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_OPEN_CLIP_FIXED = {"embeddings.position_embedding.weight": "positional_embedding",
                    "embeddings.token_embedding.weight": "token_embedding.weight",
                    "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def open_clip_to_ldm(state_dict: StateDict, prefix: str = "conditioner.embedders.1.model.") -> StateDict:
    """A transformers CLIPTextModelWithProjection state dict -> OpenCLIP keys (SDXL's second encoder).

    q/k/v are fused into ``attn.in_proj_*`` and the projection is transposed, as diffusers'
    ``convert_open_clip_checkpoint`` (its inverse) expects.
    """
    import torch

    out: StateDict = {}
    fused: dict[str, dict[str, "torch.Tensor"]] = {}
    for key, value in state_dict.items():
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        rest = key.removeprefix("text_model.")
        if rest in _OPEN_CLIP_FIXED:
            out[prefix + _OPEN_CLIP_FIXED[rest]] = value
            continue
        layer, _, inner = rest.removeprefix("encoder.layers.").partition(".")
        name = f"{prefix}transformer.resblocks.{layer}."
        if inner.startswith("self_attn.") and inner.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            part, param = inner.split(".")[1][0], inner.split(".")[2]
            fused.setdefault(f"{name}attn.in_proj_{param}", {})[part] = value
            continue
        out[name + rename_prefix(inner, _OPEN_CLIP)] = value
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def sdxl_pipeline_to_sgm(pipe: Any) -> StateDict:
    """An SDXL pipeline as one SGM-layout checkpoint (what A1111, ComfyUI and ``from_single_file`` read)."""
    return {
        **unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
        **vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)),
        **clip_to_ldm(pipe.text_encoder.state_dict(), prefix="conditioner.embedders.0.transformer."),
        **open_clip_to_ldm(pipe.text_encoder_2.state_dict()),
    }


def sd_pipeline_to_ldm(pipe: Any) -> StateDict:
    """An SD 1.x pipeline's UNet, VAE and text encoder as one LDM-layout state dict."""
    return {
        **unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
        **vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)),
        **clip_to_ldm(pipe.text_encoder.state_dict()),
    }
