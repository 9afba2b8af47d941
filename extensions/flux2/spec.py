"""FLUX.2 as data: ``flux2`` ([dev], 32B, Mistral Small 3.1 text encoder) and ``flux2_klein_4b`` / ``flux2_klein_9b``
(Qwen3 text encoders), with ai-toolkit's names, read by the registry, the config checks, sampling and the LoRA tools."""

from toolkit.registry import ArchSpec, LoraProfile, ReferenceImages, TinyModel

REFERENCES = ReferenceImages(count=10, size="own", max_area=1024 * 1024, multiple=16)
"""Reference images keep their aspect ratio, scaled down to at most 1024 x 1024 pixels with sides multiples of 16, as
Flux2Pipeline resizes them (and ai-toolkit trains them); 10 is BFL's published maximum for FLUX.2 [dev]."""


def _lora(version: str) -> LoraProfile:
    return LoraProfile(
        comfy_prefixes={},
        base_model_version=version, modelspec_architecture=version.replace("_", "-"),
        modelspec_implementation="https://github.com/black-forest-labs/flux2",
        module_words=("single_transformer_blocks", "transformer_blocks", "to_qkv_mlp_proj", "ff_context", "linear_in",
                      "linear_out", "to_add_out", "add_q_proj", "add_k_proj", "add_v_proj", "double_stream_modulation_img",
                      "double_stream_modulation_txt", "single_stream_modulation", "time_guidance_embed",
                      "context_embedder", "x_embedder", "norm_out", "proj_out"),
        signatures=(r"to_qkv_mlp_proj", r"double_stream_modulation", r"ff[._]linear_in"),
    )


def _klein(size: str) -> ArchSpec:
    return ArchSpec(
        name=f"flux2_klein_{size}",
        adapter="extensions.flux2.adapter:Flux2Adapter",
        description=f"FLUX.2 [klein] {size.upper()} (a Qwen3 text encoder): 'base' is the undistilled model trained on "
                    "(CFG sampling, as ai-toolkit trains it), 'distilled' the 4-step model.",
        denoiser="transformer",
        pipeline="Flux2KleinPipeline",
        variants={"base": {"sample_steps": 50, "guidance_scale": 4.0, "max_sequence_length": 512, "width": 1024, "height": 1024},
                  "distilled": {"sample_steps": 4, "guidance_scale": 1.0, "max_sequence_length": 512, "width": 1024,
                                "height": 1024}},
        default_variant="base",
        samplers=("flowmatch",),
        default_sampler="flowmatch",
        noise_schedulers=("flowmatch",),
        bucket_divisibility=16,
        default_lora_format="diffusers",
        lora=_lora(f"flux2_klein_{size}"),
        tiny=TinyModel(builder="extensions.flux2.tiny:build_klein", single_file="tiny_flux2_transformer.safetensors",
                       single_file_components=("transformer", "vae", "text_encoder")),
        references=REFERENCES,
    )


SPEC = ArchSpec(
    name="flux2",
    adapter="extensions.flux2.adapter:Flux2Adapter",
    description="FLUX.2 [dev] (Black Forest Labs): 32B DiT with a Mistral Small 3.1 text encoder, guidance-distilled "
                "(guidance_scale feeds its guidance embedding), up to 10 reference images.",
    denoiser="transformer",
    pipeline="Flux2Pipeline",
    variants={"dev": {"sample_steps": 50, "guidance_scale": 4.0, "train_guidance": 1.0, "max_sequence_length": 512,
                      "width": 1024, "height": 1024}},
    default_variant="dev",
    samplers=("flowmatch",),
    default_sampler="flowmatch",
    noise_schedulers=("flowmatch",),
    bucket_divisibility=16,
    default_lora_format="diffusers",
    lora=_lora("flux2"),
    tiny=TinyModel(builder="extensions.flux2.tiny:build_dev", single_file="tiny_flux2_transformer.safetensors",
                   single_file_components=("transformer", "vae", "text_encoder")),
    references=REFERENCES,
)

KLEIN_4B = _klein("4b")
KLEIN_9B = _klein("9b")
