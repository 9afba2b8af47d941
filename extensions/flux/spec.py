"""FLUX.1 as data: ``flux`` (dev, schnell) and ``flux_kontext`` (edit pairs), read by the registry, the config checks,
sampling and the LoRA tools."""

from dataclasses import replace

from toolkit.registry import ArchSpec, LoraProfile, ReferenceImages, TinyModel

LORA = LoraProfile(
    comfy_prefixes={"transformer": "transformer", "text_encoder": "text_encoders.clip_l.transformer",
                    "text_encoder_2": "text_encoders.t5xxl.transformer"},
    file_prefixes={"text_encoder": "text_model"},
    base_model_version="flux1", modelspec_architecture="flux-1-dev",
    modelspec_implementation="https://github.com/black-forest-labs/flux",
    module_words=("single_transformer_blocks", "transformer_blocks", "norm1_context", "ff_context", "proj_mlp",
                  "to_add_out", "add_q_proj", "add_k_proj", "add_v_proj", "time_text_embed", "context_embedder",
                  "x_embedder", "norm_out", "proj_out", "double_blocks", "single_blocks", "img_attn", "txt_attn",
                  "img_mlp", "txt_mlp", "img_mod", "txt_mod"),
    signatures=(r"single_transformer_blocks[._]\d+[._]attn", r"(double|single)_blocks[._]\d+",
                r"transformer_blocks[._]\d+[._]attn[._]add_q_proj", r"ff_context"),
)
"""ComfyUI and diffusers both read ``transformer.<diffusers module>.lora_A/B.weight`` with ``.alpha`` tensors for
FLUX.1 (ComfyUI maps them onto its fused layers), so the ``comfy`` format writes that; kohya files of sd-scripts
(``lora_unet_double_blocks_0_img_attn_qkv``) are read through diffusers' converter."""

_DEV = {"sample_steps": 28, "guidance_scale": 3.5, "train_guidance": 1.0, "max_sequence_length": 512,
        "width": 1024, "height": 1024}

SPEC = ArchSpec(
    name="flux",
    adapter="extensions.flux.adapter:FluxAdapter",
    description="FLUX.1 (Black Forest Labs): 12B double/single-stream DiT, T5-XXL + CLIP-L, flow matching; 'dev' is "
                "guidance-distilled (guidance_scale feeds its guidance embedding), 'schnell' the 4-step distilled model.",
    aliases=("flex1",),
    denoiser="transformer",
    pipeline="FluxPipeline",
    variants={"dev": _DEV,
              "schnell": {"sample_steps": 4, "guidance_scale": 0.0, "train_guidance": 1.0, "max_sequence_length": 256,
                          "width": 1024, "height": 1024}},
    default_variant="dev",
    samplers=("flowmatch",),
    default_sampler="flowmatch",
    noise_schedulers=("flowmatch",),
    bucket_divisibility=16,
    default_lora_format="comfy",
    lora=LORA,
    tiny=TinyModel(builder="extensions.flux.tiny:build"),
    legacy_flags=("is_flux",),
)

KONTEXT = ArchSpec(
    name="flux_kontext",
    adapter="extensions.flux.adapter:FluxKontextAdapter",
    description="FLUX.1 Kontext [dev]: FLUX.1 that edits a reference image (datasets[].control_path, sample ctrl_img); "
                "the reference's tokens join the image tokens at position index 1.",
    denoiser="transformer",
    pipeline="FluxKontextPipeline",
    variants={"dev": {**_DEV, "guidance_scale": 2.5}},
    default_variant="dev",
    samplers=("flowmatch",),
    default_sampler="flowmatch",
    noise_schedulers=("flowmatch",),
    bucket_divisibility=16,
    default_lora_format="comfy",
    lora=replace(LORA, base_model_version="flux.1_kontext", modelspec_architecture="flux-1-kontext-dev"),
    tiny=TinyModel(builder="extensions.flux.tiny:build_kontext"),
    references=ReferenceImages(count=1, size="target"),
)
