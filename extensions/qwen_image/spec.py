"""The Qwen-Image architectures as data: what the registry, the config checks, sampling and the LoRA tools read.

Names and variants follow ai-toolkit's ``model.arch`` spellings (``qwen_image``, ``qwen_image:2512``,
``qwen_image_edit``, ``qwen_image_edit_plus`` for 2509, ``qwen_image_edit_plus:2511``), so its configs select the
same models. Sampling defaults are the model cards' (50 steps and true CFG 4; the Edit-Plus models 40 steps).
"""

from dataclasses import replace

from toolkit.registry import ArchSpec, LoraProfile, ReferenceImages, TinyModel

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

_EDIT_SAMPLE = {"guidance_scale": 4.0, "width": 1024, "height": 1024}
EDIT_REFERENCES = {"size": "own", "area": 1024 * 1024, "multiple": 32, "text_encoder_sees": True}
"""How the edit pipelines size a reference for the VAE: its own aspect at one megapixel, sides multiples of 32;
their text encoder (Qwen2.5-VL) reads it too."""

EDIT_SPEC = ArchSpec(
    name="qwen_image_edit",
    adapter="extensions.qwen_image.edit:QwenImageEditAdapter",
    description="Qwen-Image-Edit: Qwen-Image that edits one reference image (datasets[].control_path, sample ctrl_img), "
                "read by the text encoder's vision tower and appended to the image tokens.",
    denoiser="transformer",
    pipeline="QwenImageEditPipeline",
    variants={"base": {**_EDIT_SAMPLE, "sample_steps": 50}},
    samplers=("flowmatch",),
    default_sampler="flowmatch",
    noise_schedulers=("flowmatch",),
    bucket_divisibility=16,
    default_lora_format="comfy",
    lora=replace(LORA, base_model_version="qwen_image_edit", modelspec_architecture="qwen-image-edit", signatures=()),
    references=ReferenceImages(count=1, **EDIT_REFERENCES),
    tiny=TinyModel(builder="extensions.qwen_image.tiny:build_edit", single_file="tiny_qwen_image_edit_transformer.safetensors",
                   single_file_components=("transformer", "vae", "text_encoder")),
)

EDIT_PLUS_SPEC = ArchSpec(
    name="qwen_image_edit_plus",
    adapter="extensions.qwen_image.edit:QwenImageEditPlusAdapter",
    description="Qwen-Image-Edit-2509 / 2511: edits from up to 3 reference images (datasets[].control_path as a list, "
                "sample ctrl_img_1..3); '2511' is Qwen-Image-Edit-2511.",
    denoiser="transformer",
    pipeline="QwenImageEditPlusPipeline",
    variants={"2509": {**_EDIT_SAMPLE, "sample_steps": 40}, "2511": {**_EDIT_SAMPLE, "sample_steps": 40}},
    default_variant="2509",
    samplers=("flowmatch",),
    default_sampler="flowmatch",
    noise_schedulers=("flowmatch",),
    bucket_divisibility=16,
    default_lora_format="comfy",
    lora=replace(LORA, base_model_version="qwen_image_edit_plus", modelspec_architecture="qwen-image-edit-plus",
                 signatures=()),
    references=ReferenceImages(count=3, **EDIT_REFERENCES),
    tiny=TinyModel(builder="extensions.qwen_image.tiny:build_edit_plus",
                   single_file="tiny_qwen_image_edit_plus_transformer.safetensors",
                   single_file_components=("transformer", "vae", "text_encoder")),
)
