"""The Z-Image architecture as data: what the registry, the config checks, sampling and the LoRA tools read."""

from toolkit.registry import ArchSpec, ControlNetProfile, LoraProfile, TinyModel

SPEC = ArchSpec(
    name="zimage",
    adapter="extensions.z_image.adapter:ZImageAdapter",
    description="Z-Image: flow matching; 'turbo' is the 8-step distilled model, 'deturbo' its de-distilled form.",
    denoiser="transformer",
    pipeline="ZImagePipeline",
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
    lora=LoraProfile(
        kohya_prefixes={"transformer": "lora_unet", "text_encoder": "lora_te"},
        comfy_prefixes={"transformer": "diffusion_model", "text_encoder": "text_encoders.qwen3_4b.transformer.model"},
        base_model_version="zimage", modelspec_architecture="z-image",
        modelspec_implementation="https://github.com/Tongyi-MAI/Z-Image",
        module_words=("noise_refiner", "context_refiner", "feed_forward", "adaLN_modulation", "all_x_embedder",
                      "all_final_layer", "cap_embedder", "t_embedder", "x_embedder", "final_layer", "attention_norm1",
                      "attention_norm2", "ffn_norm1", "ffn_norm2", "x_pad_token", "cap_pad_token"),
        signatures=(r"(noise|context)[._]refiner", r"(^|[._])layers[._]\d+[._]attention[._]", r"feed_forward[._]w[123]",
                    r"adaLN_modulation", r"qwen3"),
    ),
    tiny=TinyModel(builder="extensions.z_image.tiny:build", single_file="tiny_zimage_transformer.safetensors",
                   single_file_components=("transformer", "vae", "text_encoder")),
    # the Fun ControlNet Union checkpoints read the kind of control from the image: no control mode
    controlnet=ControlNetProfile(
        model="ZImageControlNetModel", txt2img="ZImageControlNetPipeline", max_models=1, guidance_window=False,
        shared_config=("dim", "n_heads", "n_kv_heads", "all_patch_size", "all_f_patch_size"),
        tiny="extensions.z_image.tiny:build_controlnet",
    ),
)
