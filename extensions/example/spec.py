"""The example architecture as data: everything the registry, the config checks, sampling and the LoRA tools
need to know about it without loading it. The adapter reads its facts (denoiser, pipeline) from here."""

from toolkit.registry import ArchSpec, LoraProfile, TinyModel

SPEC = ArchSpec(
    name="example",
    adapter="extensions.example.adapter:ExampleAdapter",
    description="Template to copy for a new architecture: a small UNet with one CLIP text encoder (no real checkpoints).",
    denoiser="unet",
    pipeline="StableDiffusionPipeline",
    variants={"base": {"sample_steps": 20, "guidance_scale": 5.0, "width": 256, "height": 256}},
    samplers=("euler", "ddim"),
    default_sampler="euler",
    noise_schedulers=("ddpm",),
    bucket_divisibility=16,
    default_lora_format="diffusers",
    lora=LoraProfile(
        kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te"},
        comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer"},
        file_prefixes={"text_encoder": "text_model"},
        modelspec_architecture="easel-example",
    ),
    tiny=TinyModel(builder="extensions.example.tiny:build"),
)
