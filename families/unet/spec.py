"""What the UNet family's ArchSpecs share: samplers, training noise schedules, LoRA naming of the UNet."""

from __future__ import annotations

from typing import Any, Mapping

from families.unet.sgm import SGM_NAMES
from toolkit.registry import ControlNetProfile, IPAdapterProfile

SAMPLERS = ("euler", "euler_a", "ddim", "dpm++", "ddpm")
NOISE_SCHEDULERS = ("ddpm", "ddim", "euler", "lms")
"""Training noise schedules (all DDPM; the name picks the diffusers scheduler of its config)."""


def unet_naming(layers_per_block: int, down: tuple[str, ...], up: tuple[str, ...]) -> dict[str, Any]:
    """``LoraProfile`` fields for a UNet whose files use SGM names: the naming and the layout it reads
    when no model is loaded (the real model's block layout)."""
    layout: Mapping[str, Any] = {"layers_per_block": layers_per_block, "down_block_types": down, "up_block_types": up}
    return {"denoiser_names": SGM_NAMES, "denoiser_layout": layout}


IP_ADAPTER = IPAdapterProfile(tiny="families.unet.tiny:build_ip_adapter")
"""Both take IP-Adapters through diffusers' ``IPAdapterMixin``."""


def unet_controlnets(txt2img: str, img2img: str, *, addition_embed_type: str | None, **union: Any) -> ControlNetProfile:
    """A UNet's ControlNets: diffusers' ``ControlNetModel`` (a copy of the UNet's encoder) with the architecture's
    pipelines; a fitting one has the UNet's ``addition_embed_type`` and ``cross_attention_dim``."""
    return ControlNetProfile(model="ControlNetModel", txt2img=txt2img, img2img=img2img,
                             config_values={"addition_embed_type": addition_embed_type},
                             shared_config=("cross_attention_dim",), tiny="families.unet.tiny:build_controlnet", **union)
