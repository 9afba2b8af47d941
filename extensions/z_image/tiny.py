"""``tiny:zimage``: a tiny random Z-Image with the real block structure, built in code (no download).

A single-stream DiT (refiners and main layers, real module names) with a 2-layer Qwen3 text encoder, an
offline tokenizer with Qwen's chat template and a 16-channel VAE; written as a diffusers folder plus its
transformer as an original-layout single file (``spec.tiny.single_file``, as Z-Image is distributed). A tiny
ControlNet for it (``build_controlnet``) is written both ways too, as the Fun ControlNet Union files come.
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


CONTROLNET_FILE = "tiny_zimage_controlnet.safetensors"
"""The tiny ControlNet's single file, beside its diffusers folder's config.json."""


def build_controlnet(base_folder: Path, folder: Path, seed: int = 0, union: bool = False) -> None:
    """A tiny random ``ZImageControlNetModel`` for the tiny transformer in ``base_folder`` (hints into both of its
    layers), written as a diffusers folder and as one .safetensors file with the same keys (as Fun ControlNets come).
    Z-Image's union ControlNets are this class too (they read the control type from the image), so ``union`` changes
    nothing."""
    import torch
    from diffusers import ZImageControlNetModel, ZImageTransformer2DModel
    from safetensors.torch import save_file

    from toolkit.testing.tiny import randomize_zero_layers

    config = ZImageTransformer2DModel.load_config(base_folder / "transformer")
    torch.manual_seed(seed)
    controlnet = ZImageControlNetModel(
        control_layers_places=list(range(config["n_layers"])), control_refiner_layers_places=[0],
        control_in_dim=config["in_channels"], all_patch_size=tuple(config["all_patch_size"]),
        all_f_patch_size=tuple(config["all_f_patch_size"]), dim=config["dim"], n_refiner_layers=config["n_refiner_layers"],
        n_heads=config["n_heads"], n_kv_heads=config["n_kv_heads"]).eval()
    randomize_zero_layers(controlnet, seed)
    controlnet.save_pretrained(folder, safe_serialization=True)
    save_file({key: value.contiguous() for key, value in controlnet.state_dict().items()}, str(folder / CONTROLNET_FILE))
