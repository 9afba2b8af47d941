"""Full-size model configs (random weights, no download) and the GPU helpers the GPU benchmarks share.

Sources of the configs (checked 2026-11; no weights are read):
- Z-Image-Turbo transformer: ``Tongyi-MAI/Z-Image-Turbo/transformer/config.json`` (diffusers 0.36 format):
  dim 3840, 30 layers + 2 noise and 2 context refiner layers, 30 heads (head dim 128), cap_feat_dim 2560,
  axes_dims [32, 48, 48], axes_lens [1536, 512, 512], rope_theta 256, norm_eps 1e-5, qk_norm. These are
  also ``ZImageTransformer2DModel``'s defaults in diffusers 0.42, except axes_lens (default [1024, 512, 512];
  it only sizes the RoPE table). 6.15B parameters.
- Z-Image's text encoder, Qwen3-4B (``text_encoder/config.json``): hidden 2560, 36 layers, 32 heads,
  8 KV heads, head dim 128, MLP 9728, RMS eps 1e-6, rope_theta 1e6; Z-Image reads the second-to-last
  hidden states. Its vocabulary (151936) is replaced by the offline test tokenizer's (a few thousand).
- Z-Image's VAE (the FLUX.1 autoencoder, ``vae/config.json``): 16 latent channels, blocks (128, 256, 512, 512),
  2 layers per block, scaling 0.3611, shift 0.1159, no quant convs.
- SDXL UNet: ``stabilityai/stable-diffusion-xl-base-1.0/unet/config.json``: blocks (320, 640, 1280),
  transformer depth (1, 2, 10), head dims (5, 10, 20), cross-attention 2048, text_time embedding
  (256, 2816), linear projections. 2.57B parameters.
- FLUX.1 [dev] transformer (``black-forest-labs/FLUX.1-dev/transformer/config.json``): 19 double and 38 single
  blocks, 24 heads of 128, T5 width 4096, pooled CLIP 768, guidance embedding, RoPE axes (16, 56, 56); schnell is
  the same without the guidance embedding. Its T5-XXL encoder (``text_encoder_2``): d_model 4096, 24 layers, 64
  heads of 64, gated-GELU MLP 10240, vocabulary 32128.
- FLUX.2 transformers (diffusers' Flux2Transformer2DModel defaults are [dev]; the Klein sizes are ai-toolkit's
  ``Klein4BParams`` / ``Klein9BParams``, from BFL's code): [dev] 8 double + 48 single blocks, 48 heads of 128,
  context 15360 (3 x Mistral's 5120), guidance embedding; Klein 4B 5 + 20 blocks, 24 heads, context 7680 (3 x 2560);
  Klein 9B 8 + 24 blocks, 32 heads, context 12288 (3 x 4096); all MLP ratio 3, RoPE axes (32, 32, 32, 32), 128 input
  channels (the 32-channel VAE in 2x2 patches). Klein's text encoders: Qwen3-4B (above) and Qwen3-8B (hidden 4096, 36
  layers, 32 heads, 8 KV heads, MLP 12288).
- Qwen-Image transformer: ``Qwen/Qwen-Image/transformer/config.json``: 60 dual-stream blocks, 24 heads of 128
  (inner 3072), patch 2 over 16 latent channels (in 64), joint_attention_dim 3584 (Qwen2.5-VL-7B's width), RoPE
  axes (16, 56, 56), no guidance embedding; these are also ``QwenImageTransformer2DModel``'s defaults in diffusers
  0.42. 20.43B parameters. Qwen-Image-Edit(-2509) has the same transformer; Edit-2511 adds ``zero_cond_t``.
- Qwen-Image's text encoder, Qwen2.5-VL-7B-Instruct (``text_encoder/config.json``): hidden 3584, 28 layers, 28 heads,
  4 KV heads, MLP 18944, vocabulary 152064 (untied LM head), M-RoPE sections (16, 24, 24), rope_theta 1e6; its
  vision tower: depth 32, width 1280, MLP 3420, 16 heads, patch 14, out width 3584. 8.29B parameters (7.07B
  in the language model). Qwen-Image reads the last hidden states.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ZIMAGE_TRANSFORMER = {
    "all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": 16, "dim": 3840, "n_layers": 30,
    "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": 2560,
    "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
}
ZIMAGE_TRANSFORMER_TINY = {**ZIMAGE_TRANSFORMER, "dim": 64, "n_layers": 2, "n_refiner_layers": 1, "n_heads": 2,
                           "n_kv_heads": 2, "cap_feat_dim": 32, "axes_dims": [8, 12, 12], "axes_lens": [256, 64, 64]}
QWEN3_4B = {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "max_position_embeddings": 40960, "tie_word_embeddings": True}
QWEN3_TINY = {**QWEN3_4B, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 16}
FLUX_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2, "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
            "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159,
            "use_quant_conv": False, "use_post_quant_conv": False}
FLUX_VAE_TINY = {**FLUX_VAE, "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4}
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "norm_eps": 1e-5,
}
SDXL_UNET_TINY = {**SDXL_UNET, "block_out_channels": (8, 16, 32), "transformer_layers_per_block": (1, 1, 2),
                  "attention_head_dim": (2, 2, 4), "cross_attention_dim": 64, "addition_time_embed_dim": 8,
                  "projection_class_embeddings_input_dim": 6 * 8 + 32, "norm_num_groups": 8}
FLUX_TRANSFORMER = {"patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
                    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
                    "guidance_embeds": True, "axes_dims_rope": (16, 56, 56)}
FLUX_TRANSFORMER_TINY = {**FLUX_TRANSFORMER, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                         "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": (4, 6, 6)}
FLUX2_TRANSFORMER = {"in_channels": 128, "num_layers": 8, "num_single_layers": 48, "attention_head_dim": 128,
                     "num_attention_heads": 48, "joint_attention_dim": 15360, "timestep_guidance_channels": 256,
                     "mlp_ratio": 3.0, "axes_dims_rope": (32, 32, 32, 32), "guidance_embeds": True}
KLEIN_4B_TRANSFORMER = {**FLUX2_TRANSFORMER, "num_layers": 5, "num_single_layers": 20, "num_attention_heads": 24,
                        "joint_attention_dim": 7680, "guidance_embeds": False}
KLEIN_9B_TRANSFORMER = {**FLUX2_TRANSFORMER, "num_layers": 8, "num_single_layers": 24, "num_attention_heads": 32,
                        "joint_attention_dim": 12288, "guidance_embeds": False}
FLUX2_TRANSFORMER_TINY = {**FLUX2_TRANSFORMER, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                          "num_attention_heads": 2, "joint_attention_dim": 96, "timestep_guidance_channels": 32,
                          "axes_dims_rope": (4, 4, 4, 4)}
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32}
QWEN3_8B = {**QWEN3_4B, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
            "num_key_value_heads": 8, "tie_word_embeddings": False}
QWEN_IMAGE_TRANSFORMER = {"patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
                          "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False,
                          "axes_dims_rope": (16, 56, 56)}
QWEN_IMAGE_TRANSFORMER_TINY = {**QWEN_IMAGE_TRANSFORMER, "num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2,
                               "joint_attention_dim": 32, "axes_dims_rope": (4, 6, 6)}
QWEN25_VL_7B = {
    "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                    "max_position_embeddings": 128000, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31]},
    "tie_word_embeddings": False,
}
SDXL_POOLED_TINY = 32
"""Pooled text width of the tiny SDXL (the real one is 1280)."""
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
          "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280}
CLIP_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32}
"""SDXL's text encoders: CLIP ViT-L/14's (penultimate state used) and OpenCLIP ViT-bigG/14's with its projection."""
SDXL_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2, "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
            "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.13025}
SDXL_VAE_TINY = {**SDXL_VAE, "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4}
DENOISERS = {
    "zimage": ("Z-Image 6B", "ZImageTransformer2DModel", ZIMAGE_TRANSFORMER, ZIMAGE_TRANSFORMER_TINY, "extensions.z_image.adapter:ZImageAdapter"),
    "sdxl": ("SDXL UNet", "UNet2DConditionModel", SDXL_UNET, SDXL_UNET_TINY, "extensions.sdxl.adapter:SDXLAdapter"),
    "flux": ("FLUX.1 dev 12B", "FluxTransformer2DModel", FLUX_TRANSFORMER, FLUX_TRANSFORMER_TINY, "extensions.flux.adapter:FluxAdapter"),
    "flux2_klein_4b": ("FLUX.2 klein 4B", "Flux2Transformer2DModel", KLEIN_4B_TRANSFORMER, {**FLUX2_TRANSFORMER_TINY, "guidance_embeds": False},
                       "extensions.flux2.adapter:Flux2Adapter"),
    "flux2_klein_9b": ("FLUX.2 klein 9B", "Flux2Transformer2DModel", KLEIN_9B_TRANSFORMER, {**FLUX2_TRANSFORMER_TINY, "guidance_embeds": False},
                       "extensions.flux2.adapter:Flux2Adapter"),
    "flux2": ("FLUX.2 dev 32B", "Flux2Transformer2DModel", FLUX2_TRANSFORMER, FLUX2_TRANSFORMER_TINY, "extensions.flux2.adapter:Flux2Adapter"),
    "qwen_image": ("Qwen-Image 20B", "QwenImageTransformer2DModel", QWEN_IMAGE_TRANSFORMER, QWEN_IMAGE_TRANSFORMER_TINY,
                   "extensions.qwen_image.adapter:QwenImageAdapter"),
    "qwen_image_edit_plus": ("Qwen-Image-Edit-Plus 20B", "QwenImageTransformer2DModel", QWEN_IMAGE_TRANSFORMER,
                             QWEN_IMAGE_TRANSFORMER_TINY, "extensions.qwen_image.edit:QwenImageEditPlusAdapter"),
}
"""Architecture -> (label, diffusers class, full-size config, tiny config, adapter): what the GPU benchmarks build."""

NARROW = {
    "zimage": {**ZIMAGE_TRANSFORMER, "dim": 480, "cap_feat_dim": 64, "axes_dims": [4, 6, 6]},
    "sdxl": {**SDXL_UNET, "block_out_channels": (80, 160, 320), "norm_num_groups": 16, "cross_attention_dim": 64},
}
"""Full depth at a sixteenth of the width (head dims 16; SDXL's head counts and norm groups' sizes kept in step): the
same layers, blocks and heads, so one training step dispatches the same operators as the full-size model, which
lets a CPU count them (``gpu_train.py --narrow --profile``)."""

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
                    "H100": 989.4, "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "RTX 4090": 165.2, "RTX 6000 Ada": 364.0, "A10": 125.0}
"""Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, by a part of the device name."""


def peak_tflops(device: Any, given: float | None) -> float | None:
    """The peak for MFU: ``--peak-tflops``, else by the CUDA device's name; None when unknown."""
    if given is not None:
        return given
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def device_text(device: Any) -> str:
    import platform

    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}"


def reset_memory(device: Any) -> None:
    """Free cached blocks and restart the peak counter (between configurations)."""
    import gc

    import torch

    if device.type == "cuda":
        gc.collect()  # drops the previous configuration's cycles that still hold GPU tensors
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(cls: Any, config: dict[str, Any], device: Any, dtype: Any, seed: int = 0) -> Any:
    """A model with random weights, created directly on ``device`` in ``dtype`` (no float32 copy on the way)."""
    import torch

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(**config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def bare_adapter(adapter_class: Any, denoiser: Any, arch: str | None = None) -> Any:
    """An architecture's adapter holding only its denoiser and its ArchSpec (``arch``, else the one registered with the
    adapter's import path; the adapter reads its facts there): ``predict`` is then the exact call training makes."""
    from toolkit.registry import ArchRef, Registry

    path = f"{adapter_class.__module__}:{adapter_class.__qualname__}"
    archs = Registry.discover(("jobs",), ROOT / "extensions").archs
    spec = archs[arch] if arch is not None else next(s for s in archs.values() if s.adapter == path)
    from toolkit.config.blocks import ModelConfig

    adapter = object.__new__(adapter_class)
    adapter.denoiser = denoiser
    adapter.arch = ArchRef(spec, spec.default_variant)
    adapter.config = ModelConfig(name_or_path="bench", arch=spec.name)  # the variant's defaults and no model_kwargs
    return adapter


def default_rank(arch: str) -> int:
    """The LoRA rank the issues' goals name: 32 for Z-Image, 16 for SDXL, the FLUX models and Qwen-Image."""
    return 32 if arch == "zimage" else 16


def lora_network(adapter_class: Any, denoiser: Any, rank: int, arch: str | None = None) -> tuple[Any, Any]:
    """The bare adapter and a LoRA (rank = alpha) on the architecture's default targets, as the trainer builds it."""
    from toolkit.config.blocks import NetworkConfig
    from toolkit.network.network import Network

    adapter = bare_adapter(adapter_class, denoiser, arch)
    name = adapter.denoiser_name
    targets = adapter_class.lora_targets(adapter, False)[name]
    return adapter, Network.build({name: denoiser}, {name: targets}, NetworkConfig(type="lora", linear=rank, linear_alpha=rank))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
