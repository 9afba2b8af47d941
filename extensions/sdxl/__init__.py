"""Stable Diffusion XL."""

from extensions.sd15 import SD_NOISE_SCHEDULERS, SD_SAMPLERS
from toolkit.registry import ArchSpec, Extension, LoraProfile

_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


EXTENSION = Extension(
    name="sdxl",
    description="Stable Diffusion XL base models.",
    architectures=(
        ArchSpec(
            name="sdxl",
            adapter="extensions.sdxl.adapter:SDXLAdapter",
            description="SDXL: 1024px, two CLIP text encoders, size/crop micro-conditioning.",
            variants={"base": {"sample_steps": 30, "guidance_scale": 6.0, "width": 1024, "height": 1024}},
            samplers=SD_SAMPLERS,
            default_sampler="euler_a",
            noise_schedulers=SD_NOISE_SCHEDULERS,
            bucket_divisibility=64,
            default_lora_format="kohya",
            lora=LoraProfile(
                denoiser="unet",
                kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
                comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer",
                                "text_encoder_2": "text_encoders.clip_g.transformer"},
                file_prefixes={"text_encoder": "text_model"},
                unet_config={"layers_per_block": 2, "down_block_types": _DOWN, "up_block_types": _UP},
                kohya_sgm=True, base_model_version="sdxl_base_v1-0", modelspec_architecture="stable-diffusion-xl-v1-base",
                modelspec_implementation="https://github.com/Stability-AI/generative-models",
                signatures=(r"^lora_te2_", r"^text_encoder_2\.", r"clip_g", r"transformer_blocks[._][1-9]",
                            r"input_blocks[._][4578][._]1[._]", r"(add_embedding|label_emb)[._]"),
                diffusers_pipeline="StableDiffusionXLPipeline",
            ),
            legacy_flags=("is_xl", "is_ssd", "is_vega"),
        ),
    ),
)
