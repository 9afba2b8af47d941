"""``tiny:example``: the example architecture's tiny random model, built in code (no download).

The builder writes a diffusers folder that loads through the same code as a user's model; it is registered as
``SPEC.tiny`` and cached under ``output/.tiny/example/`` (rebuilt when this folder's files change). Build it
from the shared pieces in ``toolkit/testing/tiny.py`` (offline tokenizers, tiny text encoders, a fitted VAE).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline


def pipeline(seed: int = 0) -> "StableDiffusionPipeline":
    """The tiny pipeline in memory, deterministic for ``seed``: a 2-level UNet, a 2-layer CLIP, the 4-channel VAE."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from toolkit.testing.tiny import clip_tokenizer, tiny_clip, tiny_vae

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
    ).eval()
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1)
    return StableDiffusionPipeline(vae=tiny_vae(seed + 1), text_encoder=tiny_clip(tokenizer, seed + 2), tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build(folder: Path, seed: int = 0) -> None:
    """Write the tiny model as a diffusers folder."""
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipeline(seed), folder)
