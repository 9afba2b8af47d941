"""Z-Image (Tongyi-MAI): Turbo, base, and de-turbo variants."""

from toolkit.registry import ArchSpec, Extension

EXTENSION = Extension(
    name="z_image",
    description="Z-Image single-stream DiT with a Qwen3 text encoder, trained with flow matching.",
    architectures=(
        ArchSpec(
            name="zimage",
            adapter="extensions.z_image.adapter:ZImageAdapter",
            description="Z-Image: flow matching; 'turbo' is the 8-step distilled model, 'deturbo' its de-distilled form.",
            variants={
                "base": {"sample_steps": 28, "guidance_scale": 4.0, "flow_shift": 3.0, "width": 1024, "height": 1024},
                "turbo": {"sample_steps": 8, "guidance_scale": 1.0, "flow_shift": 3.0, "width": 1024, "height": 1024},
                "deturbo": {"sample_steps": 25, "guidance_scale": 3.0, "flow_shift": 3.0, "width": 1024, "height": 1024},
            },
            default_variant="base",
            samplers=("flowmatch",),
            default_sampler="flowmatch",
            noise_schedulers=("flowmatch",),
            bucket_divisibility=16,
            default_lora_format="comfy",
        ),
    ),
)
