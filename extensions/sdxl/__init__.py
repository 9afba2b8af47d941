"""Stable Diffusion XL."""

from toolkit.registry import ArchSpec, Extension

EXTENSION = Extension(
    name="sdxl",
    description="Stable Diffusion XL base models.",
    architectures=(
        ArchSpec(
            name="sdxl",
            adapter="extensions.sdxl.adapter:SDXLAdapter",
            description="SDXL: 1024px, two CLIP text encoders, size/crop micro-conditioning.",
            variants={"base": {"sample_steps": 30, "guidance_scale": 6.0, "width": 1024, "height": 1024}},
            samplers=("euler", "euler_a", "ddim", "dpm++", "ddpm"),
            default_sampler="euler_a",
            noise_schedulers=("ddpm", "ddim", "euler", "lms"),
            bucket_divisibility=64,
            default_lora_format="kohya",
            legacy_flags=("is_xl",),
        ),
    ),
)
