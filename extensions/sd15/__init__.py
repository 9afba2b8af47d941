"""Stable Diffusion 1.x (and fine-tunes such as Anything-V5)."""

from toolkit.registry import ArchSpec, Extension, LoraProfile

SD_SAMPLERS = ("euler", "euler_a", "ddim", "dpm++", "ddpm")
SD_NOISE_SCHEDULERS = ("ddpm", "ddim", "euler", "lms")
"""Shared with SDXL (same samplers and DDPM training schedule)."""
_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


EXTENSION = Extension(
    name="sd15",
    description="Stable Diffusion 1.x UNet models.",
    architectures=(
        ArchSpec(
            name="sd15",
            adapter="extensions.sd15.adapter:SD15Adapter",
            description="Stable Diffusion 1.x: 512px, CLIP ViT-L text encoder, epsilon or v-prediction.",
            aliases=("sd1",),
            variants={"base": {"sample_steps": 25, "guidance_scale": 7.5, "width": 512, "height": 512}},
            samplers=SD_SAMPLERS,
            default_sampler="euler_a",
            noise_schedulers=SD_NOISE_SCHEDULERS,
            bucket_divisibility=64,
            default_lora_format="kohya",
            lora=LoraProfile(
                denoiser="unet",
                kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te"},
                comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer"},
                file_prefixes={"text_encoder": "text_model"},
                unet_config={"layers_per_block": 2, "down_block_types": _DOWN, "up_block_types": _UP},
                base_model_version="sd_v1", modelspec_architecture="stable-diffusion-v1",
                signatures=(r"^lora_te_text_model", r"down_blocks[._]0[._]attentions", r"input_blocks[._][12][._]1[._]",
                            r"(^|[._])lora_te_"),
                diffusers_pipeline="StableDiffusionPipeline",
            ),
            legacy_default=True,
        ),
    ),
)
