"""Stable Diffusion 1.x (and fine-tunes such as Anything-V5)."""

from toolkit.registry import ArchSpec, Extension

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
            samplers=("euler", "euler_a", "ddim", "dpm++", "ddpm"),
            default_sampler="euler_a",
            noise_schedulers=("ddpm", "ddim", "euler", "lms"),
            bucket_divisibility=64,
            default_lora_format="kohya",
        ),
    ),
)
