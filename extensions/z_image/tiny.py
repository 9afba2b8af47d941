"""``tiny:zimage``: a tiny random Z-Image with the real block structure, built in code (no download).

A single-stream DiT (refiners and main layers, real module names) with a 2-layer Qwen3 text encoder, an
offline tokenizer with Qwen's chat template and a 16-channel VAE; written as a diffusers folder plus its
transformer as an original-layout single file (``spec.tiny.single_file``, as Z-Image is distributed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from extensions.z_image.spec import SPEC

if TYPE_CHECKING:
    from diffusers import ZImagePipeline


def pipeline(seed: int = 0) -> "ZImagePipeline":
    """The tiny Z-Image pipeline in memory, deterministic for ``seed``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    from toolkit.testing.tiny import qwen_tokenizer, tiny_qwen3, tiny_vae

    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=32, axes_dims=[4, 6, 6], axes_lens=[512, 64, 64],
    ).eval()
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, use_dynamic_shifting=False, shift=3.0),
        vae=tiny_vae(seed + 1, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
        text_encoder=tiny_qwen3(tokenizer, seed + 2), tokenizer=tokenizer, transformer=transformer,
    )


def build(folder: Path, seed: int = 0) -> None:
    """Write the tiny model as a diffusers folder, plus its transformer in the original single-file layout."""
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import save_file

    from extensions.z_image.original import zimage_to_original
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipeline(seed), folder)
    transformer = ZImageTransformer2DModel.from_pretrained(folder / "transformer")
    state = {key: value.contiguous() for key, value in zimage_to_original(transformer.state_dict()).items()}
    save_file(state, str(folder / SPEC.tiny.single_file))
