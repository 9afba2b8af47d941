"""``tiny:sdxl``: a tiny random SDXL with the real block structure, built in code (no download).

A 3-level UNet with text_time micro-conditioning, CLIP-L and CLIP-G-with-projection encoders (2 layers each)
and an offline tokenizer; written as a diffusers folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline


def pipeline(seed: int = 0) -> "StableDiffusionXLPipeline":
    """The tiny SDXL pipeline in memory, deterministic for ``seed``."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from families.unet.tiny import scheduler_config
    from toolkit.testing.tiny import clip_tokenizer, tiny_clip, tiny_vae

    tokenizer = clip_tokenizer()
    time_dim, hidden = 8, 32
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 2), attention_head_dim=(2, 2, 4), use_linear_projection=True,
        cross_attention_dim=2 * hidden, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + hidden, norm_num_groups=8,
    ).eval()
    config = scheduler_config() | {"timestep_spacing": "leading", "interpolation_type": "linear"}
    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed + 1, scaling_factor=0.13025), text_encoder=tiny_clip(tokenizer, seed + 2, hidden=hidden),
        text_encoder_2=tiny_clip(tokenizer, seed + 3, projection=True, hidden=hidden), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler.from_config(config), force_zeros_for_empty_prompt=True,
    )


def build(folder: Path, seed: int = 0) -> None:
    """Write the tiny SDXL as a diffusers folder."""
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipeline(seed), folder)
