"""``tiny:qwen_image``: a tiny random Qwen-Image with the real module structure, built in code (no download).

A 2-block MMDiT (``QwenImageTransformer2DModel``: real module names, patch 2, 16 latent channels), a 2-layer
Qwen2.5-VL text encoder with a 2-block vision tower (``Qwen2_5_VLForConditionalGeneration`` with a tiny config),
an offline Qwen tokenizer with Qwen's chat and vision special tokens, and a small ``AutoencoderKLQwenImage``
(random weights, the real latent statistics); the scheduler is Qwen-Image's own config (dynamic shifting).
Written as a diffusers folder plus the transformer as a single file (``spec.tiny.single_file``; Qwen-Image's
single files keep diffusers' module names).

The tiny tokenizer splits the pipeline's prompt template into more tokens than the real one (its vocabulary is
small), so the 34 template tokens the pipeline drops leave some template words in front of the prompt; the
adapter drops exactly what the pipeline drops, so the two stay equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from extensions.qwen_image.spec import SPEC

if TYPE_CHECKING:
    from diffusers import QwenImagePipeline

SCHEDULER = {
    "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 8192, "max_shift": 0.9,
    "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02, "stochastic_sampling": False,
    "time_shift_type": "exponential", "use_beta_sigmas": False, "use_dynamic_shifting": True,
    "use_exponential_sigmas": False, "use_karras_sigmas": False,
}
"""``Qwen/Qwen-Image/scheduler/scheduler_config.json`` (the same in ai-toolkit's Qwen-Image trainer)."""
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]


def tokenizer() -> Any:
    """The offline Qwen2 tokenizer with Qwen2.5-VL's vision tokens added."""
    from toolkit.testing.tiny import qwen_tokenizer

    tokens = qwen_tokenizer()
    tokens.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *VISION_TOKENS]})
    tokens.model_max_length = 131072  # Qwen2.5-VL's; prompts with vision tokens run past the test tokenizer's 512
    return tokens


def text_encoder(tokens: Any, seed: int, hidden: int = 32) -> Any:
    """A 2-layer Qwen2.5-VL (text model, vision tower, LM head) over the tiny tokenizer's vocabulary."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {name: tokens.convert_tokens_to_ids(token) for name, token in
           zip(("vision_start_token_id", "vision_end_token_id", "image_token_id"), VISION_TOKENS)}
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokens), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 2048, "rope_theta": 1e6, "bos_token_id": None,
                     "eos_token_id": tokens.eos_token_id, "pad_token_id": tokens.pad_token_id,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": hidden,
                       "fullatt_block_indexes": [1], "window_size": 56},
        **ids,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def transformer(seed: int, text_width: int = 32, **extra: Any) -> Any:
    """A 2-block QwenImageTransformer2DModel (head dim 16, 2 heads) for 16-channel latents."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
                                       num_attention_heads=2, joint_attention_dim=text_width, axes_dims_rope=(4, 6, 6),
                                       **extra).eval()


def vae(seed: int) -> Any:
    """A small AutoencoderKLQwenImage: 8x spatial compression, 16 latent channels, Qwen-Image's latent statistics."""
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                  temperal_downsample=[False, True, True]).eval()


def pipeline(seed: int = 0) -> "QwenImagePipeline":
    """The tiny Qwen-Image pipeline in memory, deterministic for ``seed``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    tokens = tokenizer()
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae(seed + 1),
                             text_encoder=text_encoder(tokens, seed + 2), tokenizer=tokens, transformer=transformer(seed))


def save_single_file(pipe: Any, folder: Path, name: str) -> None:
    """The transformer as one safetensors file, as Qwen-Image's single files are (diffusers' module names)."""
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in pipe.transformer.state_dict().items()}, str(folder / name))


def build(folder: Path, seed: int = 0) -> None:
    """Write the tiny model as a diffusers folder, plus its transformer as a single file."""
    from toolkit.testing.tiny import save_pipeline

    pipe = pipeline(seed)
    save_pipeline(pipe, folder)
    save_single_file(pipe, folder, SPEC.tiny.single_file)  # type: ignore[union-attr]


def edit_pipeline(class_name: str, seed: int = 0, **transformer_config: Any) -> Any:
    """A tiny edit pipeline (``QwenImageEditPipeline`` / ``QwenImageEditPlusPipeline``): the text-to-image parts plus
    the processor the text encoder reads reference images through (Qwen2VL's image settings: 14 px patches, 2 x 2 merges)."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from extensions.qwen_image.edit import images_only_processor

    tokens = tokenizer()
    return getattr(diffusers, class_name)(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae(seed + 1), text_encoder=text_encoder(tokens, seed + 2),
        tokenizer=tokens, processor=images_only_processor(tokens, Qwen2VLImageProcessorPil()),
        transformer=transformer(seed, **transformer_config))


def save_edit(pipe: Any, folder: Path, single_file: str) -> None:
    """Write an edit pipeline as its hub repository is laid out (``processor/`` holds the image processor's settings and
    the tokenizer), plus its transformer as a single file."""
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipe, folder)
    save_single_file(pipe, folder, single_file)


def build_edit(folder: Path, seed: int = 0) -> None:
    """``tiny:qwen_image_edit``."""
    from extensions.qwen_image.spec import EDIT_SPEC

    save_edit(edit_pipeline("QwenImageEditPipeline", seed), folder, EDIT_SPEC.tiny.single_file)  # type: ignore[union-attr]


def build_edit_plus(folder: Path, seed: int = 0) -> None:
    """``tiny:qwen_image_edit_plus``, with 2511's ``zero_cond_t`` (reference tokens modulated as at timestep 0)."""
    from extensions.qwen_image.spec import EDIT_PLUS_SPEC

    pipe = edit_pipeline("QwenImageEditPlusPipeline", seed, zero_cond_t=True)
    save_edit(pipe, folder, EDIT_PLUS_SPEC.tiny.single_file)  # type: ignore[union-attr]
