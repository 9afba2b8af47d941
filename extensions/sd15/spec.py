"""The SD 1.x architecture as data: what the registry, the config checks, sampling and the LoRA tools read."""

from families.unet.spec import IP_ADAPTER, NOISE_SCHEDULERS, SAMPLERS, unet_controlnets, unet_naming
from toolkit.registry import ArchSpec, LoraProfile, TinyModel

_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

SPEC = ArchSpec(
    name="sd15",
    adapter="extensions.sd15.adapter:SD15Adapter",
    description="Stable Diffusion 1.x: 512px, CLIP ViT-L text encoder, epsilon or v-prediction.",
    aliases=("sd1",),
    denoiser="unet",
    pipeline="StableDiffusionPipeline",
    variants={"base": {"sample_steps": 25, "guidance_scale": 7.5, "width": 512, "height": 512}},
    samplers=SAMPLERS,
    default_sampler="euler_a",
    noise_schedulers=NOISE_SCHEDULERS,
    bucket_divisibility=64,
    default_lora_format="kohya",
    lora=LoraProfile(
        kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te"},
        comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer"},
        file_prefixes={"text_encoder": "text_model"},
        **unet_naming(2, _DOWN, _UP),
        base_model_version="sd_v1", modelspec_architecture="stable-diffusion-v1",
        signatures=(r"^lora_te_text_model", r"down_blocks[._]0[._]attentions", r"input_blocks[._][12][._]1[._]",
                    r"(^|[._])lora_te_"),
    ),
    tiny=TinyModel(builder="extensions.sd15.tiny:build", single_file="tiny_sd15.safetensors",
                   single_file_components=("unet", "vae", "text_encoder")),
    legacy_default=True,
    controlnet=unet_controlnets("StableDiffusionControlNetPipeline", "StableDiffusionControlNetImg2ImgPipeline",
                                addition_embed_type=None),
    ip_adapter=IP_ADAPTER,
)
