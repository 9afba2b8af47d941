"""``tiny:sd15``: a tiny random SD 1.x with the real block structure, built in code (no download).

The UNet has 3 cross-attention levels and a plain one with very few channels, the text encoder is CLIP-L-shaped
(2 layers), the tokenizer is trained offline; the folder also holds the model as one single-file checkpoint in
the original LDM layout (``spec.tiny.single_file``), so both load through the code a user's model goes through.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from extensions.sd15.spec import SPEC

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline


def pipeline(seed: int = 0) -> "StableDiffusionPipeline":
    """The tiny SD 1.x pipeline in memory, deterministic for ``seed``."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from families.unet.tiny import scheduler_config
    from toolkit.testing.tiny import clip_tokenizer, tiny_clip, tiny_vae

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
    ).eval()
    return StableDiffusionPipeline(
        vae=tiny_vae(seed + 1), text_encoder=tiny_clip(tokenizer, seed + 2), tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(scheduler_config() | {"skip_prk_steps": True}),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build(folder: Path, seed: int = 0) -> None:
    """Write the tiny model as a diffusers folder plus its single-file checkpoint (LDM layout)."""
    from safetensors.torch import save_file

    from families.unet.ldm import sd_pipeline_to_ldm
    from toolkit.testing.tiny import save_pipeline

    pipe = pipeline(seed)
    save_pipeline(pipe, folder)
    state = {key: value.contiguous() for key, value in sd_pipeline_to_ldm(pipe).items()}
    save_file(state, str(folder / SPEC.tiny.single_file))
