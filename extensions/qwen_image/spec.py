"""The Qwen-Image architectures as data: what the registry, the config checks, sampling and the LoRA tools read.

Names and variants follow ai-toolkit's ``model.arch`` spellings (``qwen_image``, ``qwen_image:2512``), so its configs
select the same models. Sampling defaults are the model cards' (50 steps, true CFG 4, 1328 x 1328).
"""

from toolkit.registry import ArchSpec, LoraProfile, TinyModel

_SAMPLE = {"sample_steps": 50, "guidance_scale": 4.0, "width": 1328, "height": 1328}

LORA = LoraProfile(
    kohya_prefixes={"transformer": "lora_unet"},
    comfy_prefixes={"transformer": "diffusion_model"},
    base_model_version="qwen_image", modelspec_architecture="qwen-image",
    modelspec_implementation="https://github.com/QwenLM/Qwen-Image",
    module_words=("img_mod", "txt_mod", "img_mlp", "txt_mlp", "img_in", "txt_in", "txt_norm", "timestep_embedder"),
    signatures=(r"img_mlp", r"txt_mlp", r"img_mod", r"txt_mod", r"(^|[._])attn[._]to_add_out"),
)
"""LoRA naming: ComfyUI and diffusers both read ``diffusion_model.<diffusers module path>`` (ComfyUI's Qwen-Image
uses diffusers' module names) and kohya's ``lora_unet_<flat path>``."""

SPEC = ArchSpec(
    name="qwen_image",
    adapter="extensions.qwen_image.adapter:QwenImageAdapter",
    description="Qwen-Image: 20B MMDiT with a Qwen2.5-VL text encoder, flow matching with a resolution-dependent shift; "
                "'2512' is Qwen-Image-2512.",
    denoiser="transformer",
    pipeline="QwenImagePipeline",
    variants={"base": _SAMPLE, "2512": _SAMPLE},
    default_variant="base",
    samplers=("flowmatch",),
    default_sampler="flowmatch",
    noise_schedulers=("flowmatch",),
    bucket_divisibility=16,
    default_lora_format="comfy",
    lora=LORA,
    tiny=TinyModel(builder="extensions.qwen_image.tiny:build", single_file="tiny_qwen_image_transformer.safetensors",
                   single_file_components=("transformer", "vae", "text_encoder")),
)
