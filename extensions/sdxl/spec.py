"""The SDXL architecture as data: what the registry, the config checks, sampling and the LoRA tools read."""

from families.unet.spec import IP_ADAPTER, NOISE_SCHEDULERS, SAMPLERS, unet_controlnets, unet_naming
from toolkit.registry import ArchSpec, LoraProfile, TinyModel

_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")

SPEC = ArchSpec(
    name="sdxl",
    adapter="extensions.sdxl.adapter:SDXLAdapter",
    description="SDXL: 1024px, two CLIP text encoders, size/crop micro-conditioning.",
    denoiser="unet",
    pipeline="StableDiffusionXLPipeline",
    variants={"base": {"sample_steps": 30, "guidance_scale": 6.0, "width": 1024, "height": 1024}},
    samplers=SAMPLERS,
    default_sampler="euler_a",
    noise_schedulers=NOISE_SCHEDULERS,
    bucket_divisibility=64,
    default_lora_format="kohya",
    lora=LoraProfile(
        kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
        comfy_prefixes={"unet": "diffusion_model", "text_encoder": "text_encoders.clip_l.transformer",
                        "text_encoder_2": "text_encoders.clip_g.transformer"},
        file_prefixes={"text_encoder": "text_model"},
        **unet_naming(2, _DOWN, _UP),
        kohya_denoiser_names=True, base_model_version="sdxl_base_v1-0", modelspec_architecture="stable-diffusion-xl-v1-base",
        modelspec_implementation="https://github.com/Stability-AI/generative-models",
        signatures=(r"^lora_te2_", r"^text_encoder_2\.", r"clip_g", r"transformer_blocks[._][1-9]",
                    r"input_blocks[._][4578][._]1[._]", r"(add_embedding|label_emb)[._]"),
    ),
    tiny=TinyModel(builder="extensions.sdxl.tiny:build"),
    legacy_flags=("is_xl", "is_ssd", "is_vega"),
    controlnet=unet_controlnets(
        "StableDiffusionXLControlNetPipeline", "StableDiffusionXLControlNetImg2ImgPipeline", addition_embed_type="text_time",
        union_model="ControlNetUnionModel", union_txt2img="StableDiffusionXLControlNetUnionPipeline",
        union_img2img="StableDiffusionXLControlNetUnionImg2ImgPipeline",
        # xinsir's controlnet-union-sdxl-1.0 (and ProMax: tile 6, inpaint 7): the control type of each index
        union_modes={"openpose": 0, "pose": 0, "depth": 1, "softedge": 2, "hed": 2, "scribble": 2, "canny": 3, "lineart": 3,
                     "mlsd": 3, "normal": 4, "segment": 5, "tile": 6, "inpaint": 7},
    ),
    ip_adapter=IP_ADAPTER,
)
