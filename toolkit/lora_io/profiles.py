"""Which LoRA naming profile an architecture uses, and guessing the architecture of a file.

An architecture declares its ``LoraProfile`` in its ``ArchSpec(lora=...)``. ``PENDING`` holds the
profiles of the built-in architectures until their extensions declare them (they move to
``extensions/<arch>/__init__.py``; nothing else here names an architecture).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Mapping

from toolkit.registry import LoraProfile

if TYPE_CHECKING:
    from toolkit.registry import ArchSpec, Registry

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_XL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_XL_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")

PENDING: Mapping[str, LoraProfile] = {
    "sd15": LoraProfile(
        denoiser="unet",
        kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te"},
        comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer"},
        file_prefixes={"text_encoder": "text_model"},
        unet_config={"layers_per_block": 2, "down_block_types": _SD_DOWN, "up_block_types": _SD_UP},
        base_model_version="sd_v1", modelspec_architecture="stable-diffusion-v1",
        signatures=(r"^lora_te_text_model", r"down_blocks[._]0[._]attentions", r"input_blocks[._][12][._]1[._]",
                    r"(^|[._])lora_te_"),
        diffusers_pipeline="StableDiffusionPipeline",
    ),
    "sdxl": LoraProfile(
        denoiser="unet",
        kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
        comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer",
                        "text_encoder_2": "text_encoders.clip_g.transformer"},
        file_prefixes={"text_encoder": "text_model"},
        unet_config={"layers_per_block": 2, "down_block_types": _XL_DOWN, "up_block_types": _XL_UP},
        kohya_sgm=True, base_model_version="sdxl_base_v1-0", modelspec_architecture="stable-diffusion-xl-v1-base",
        modelspec_implementation="https://github.com/Stability-AI/generative-models",
        signatures=(r"^lora_te2_", r"^text_encoder_2\.", r"clip_g", r"transformer_blocks[._][1-9]",
                    r"input_blocks[._][4578][._]1[._]", r"(add_embedding|label_emb)[._]"),
        diffusers_pipeline="StableDiffusionXLPipeline",
    ),
    "zimage": LoraProfile(
        denoiser="transformer",
        kohya_prefixes={"transformer": "lora_unet", "text_encoder": "lora_te"},
        comfy_prefixes={"transformer": "diffusion_model", "text_encoder": "text_encoders.qwen3_4b.transformer.model"},
        base_model_version="zimage", modelspec_architecture="z-image",
        modelspec_implementation="https://github.com/Tongyi-MAI/Z-Image",
        module_words=("noise_refiner", "context_refiner", "feed_forward", "adaLN_modulation", "all_x_embedder",
                      "all_final_layer", "cap_embedder", "t_embedder", "x_embedder", "final_layer", "attention_norm1",
                      "attention_norm2", "ffn_norm1", "ffn_norm2", "x_pad_token", "cap_pad_token"),
        signatures=(r"(noise|context)[._]refiner", r"(^|[._])layers[._]\d+[._]attention[._]", r"feed_forward[._]w[123]",
                    r"adaLN_modulation", r"qwen3"),
        diffusers_pipeline="ZImagePipeline",
    ),
}


def profile_of(spec: "ArchSpec") -> LoraProfile:
    """The architecture's LoRA profile: its own declaration, else the pending built-in one, else defaults."""
    if spec.lora is not None:
        return spec.lora
    return PENDING.get(spec.name, LoraProfile())


def all_profiles(registry: "Registry") -> dict[str, LoraProfile]:
    """Architecture name -> profile, for every registered architecture (aliases once)."""
    return {spec.name: profile_of(spec) for spec in registry.archs.values()}


def guess_arch(keys: Iterable[str], metadata: Mapping[str, str], registry: "Registry") -> str | None:
    """The most likely architecture of a LoRA from its metadata, else from its key names; None when unclear."""
    profiles = all_profiles(registry)
    declared = metadata.get("easel.arch", "").partition(":")[0]
    if declared in profiles:
        return declared
    version = metadata.get("ss_base_model_version", "")
    spec_arch = metadata.get("modelspec.architecture", "").partition("/")[0]
    for name, profile in profiles.items():
        if (version and version == profile.base_model_version) or (spec_arch and spec_arch == profile.modelspec_architecture):
            return name
    keys = list(keys)
    scores = {name: sum(1 for pattern in profile.signatures if any(re.search(pattern, key) for key in keys))
              for name, profile in profiles.items()}
    best = max(scores.values(), default=0)
    winners = [name for name, score in scores.items() if score == best]
    return winners[0] if best > 0 and len(winners) == 1 else None
