"""What the UNet family's ArchSpecs share: samplers, training noise schedules, LoRA naming of the UNet."""

from __future__ import annotations

from typing import Any, Mapping

from families.unet.sgm import SGM_NAMES

SAMPLERS = ("euler", "euler_a", "ddim", "dpm++", "ddpm")
NOISE_SCHEDULERS = ("ddpm", "ddim", "euler", "lms")
"""Training noise schedules (all DDPM; the name picks the diffusers scheduler of its config)."""


def unet_naming(layers_per_block: int, down: tuple[str, ...], up: tuple[str, ...]) -> dict[str, Any]:
    """``LoraProfile`` fields for a UNet whose files use SGM names: the naming and the layout it reads
    when no model is loaded (the real model's block layout)."""
    layout: Mapping[str, Any] = {"layers_per_block": layers_per_block, "down_block_types": down, "up_block_types": up}
    return {"denoiser_names": SGM_NAMES, "denoiser_layout": layout}
