"""``tiny:flux2_klein_4b`` / ``tiny:flux2_klein_9b`` and ``tiny:flux2``: tiny random FLUX.2 [klein] and [dev] models with
the real block structure.

One double-stream and one single-stream block (real module names; Klein without a guidance embedding, [dev] with one),
for Klein a Qwen3 causal LM deep enough for the three hidden layers it reads (9, 18, 27), for [dev] a Mistral3
vision-language model (its language model 30 layers deep for hidden states 10, 20, 30), both with the offline Qwen
tokenizer ([dev]'s chat template reads Mistral's content lists), and a 32-channel
FLUX.2 VAE made from the fitted tiny VAE, with random batch-norm statistics; written as a
diffusers folder plus its transformer in the original single-file layout (``spec.tiny.single_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SINGLE_FILE = "tiny_flux2_transformer.safetensors"


def tiny_qwen3_lm(tokenizer: Any, seed: int, hidden: int = 32, layers: int = 28) -> Any:
    """A Qwen3ForCausalLM with ``layers`` narrow layers (Klein stacks hidden states 9, 18 and 27)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config).eval()


def tiny_vae(seed: int) -> Any:
    """An AutoencoderKLFlux2 with the real 4-level layout (8x down, 32 channels, 2x2 patches normalised by its BN),
    made from the fitted 16-channel tiny VAE (so images round-trip and samples show colours): each latent channel is
    doubled (the encoder gives both copies, the decoder reads their mean); the BN statistics are random, so the
    latent normalisation is not the identity."""
    import torch
    from diffusers import AutoencoderKLFlux2

    from toolkit.testing.tiny import tiny_vae as fitted_vae

    fitted = fitted_vae(seed, latent_channels=16, scaling_factor=1.0, shift_factor=0.0, quant_conv=False).state_dict()
    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=32, norm_num_groups=4,
                             sample_size=64, use_quant_conv=False, use_post_quant_conv=False)
    weight, bias = fitted["encoder.conv_out.weight"], fitted["encoder.conv_out.bias"]
    mean_w, logvar_w = weight.chunk(2)
    mean_b, logvar_b = bias.chunk(2)
    fitted["encoder.conv_out.weight"] = torch.cat([mean_w, mean_w, logvar_w, logvar_w])
    fitted["encoder.conv_out.bias"] = torch.cat([mean_b, mean_b, logvar_b, logvar_b])
    fitted["decoder.conv_in.weight"] = torch.cat([fitted["decoder.conv_in.weight"] / 2] * 2, dim=1)
    vae.load_state_dict(fitted, strict=False)
    with torch.no_grad():
        vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape) * 0.1)
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape) + 0.5)
    return vae.eval()


def tiny_mistral3(tokenizer: Any, seed: int, hidden: int = 32) -> Any:
    """A Mistral3ForConditionalGeneration (FLUX.2 [dev]'s text encoder) with a narrow 30-layer language model and a
    one-layer Pixtral vision tower (unused for prompts, there because the class has one)."""
    import torch
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    text = MistralConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=30,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id)
    vision = PixtralVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                                 patch_size=16, head_dim=8)
    torch.manual_seed(seed)
    return Mistral3ForConditionalGeneration(Mistral3Config(text_config=text, vision_config=vision, spatial_merge_size=1)).eval()


CONTENT_CHAT_TEMPLATE = ("{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
                         "{%- for part in message['content'] %}{{ part['text'] }}{%- endfor %}{{ '<|im_end|>\\n' }}{%- endfor %}")
"""A chat template over content lists (``[{"type": "text", "text": ...}]``), as Flux2Pipeline formats prompts."""


def _transformer(seed: int, guidance: bool) -> Any:
    import torch
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(
        in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=3 * 32, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=guidance,
    ).eval()


def _scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                           max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def dev_pipeline(seed: int = 0) -> Any:
    """The tiny FLUX.2 [dev] pipeline in memory, deterministic for ``seed``."""
    from diffusers import Flux2Pipeline

    from toolkit.testing.tiny import qwen_tokenizer

    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = CONTENT_CHAT_TEMPLATE
    return Flux2Pipeline(scheduler=_scheduler(), vae=tiny_vae(seed + 1), text_encoder=tiny_mistral3(tokenizer, seed + 2),
                         tokenizer=tokenizer, transformer=_transformer(seed, guidance=True))


def klein_pipeline(seed: int = 0) -> Any:
    """The tiny Klein pipeline in memory, deterministic for ``seed``."""
    from diffusers import Flux2KleinPipeline

    from toolkit.testing.tiny import qwen_tokenizer

    tokenizer = qwen_tokenizer()
    return Flux2KleinPipeline(scheduler=_scheduler(), vae=tiny_vae(seed + 1), text_encoder=tiny_qwen3_lm(tokenizer, seed + 2),
                              tokenizer=tokenizer, transformer=_transformer(seed, guidance=False), is_distilled=False)


def build_klein(folder: Path, seed: int = 0) -> None:
    """Write the tiny Klein as a diffusers folder, plus its transformer in the original (BFL) single-file layout."""
    _save(klein_pipeline(seed), folder)


def build_dev(folder: Path, seed: int = 0) -> None:
    """Write the tiny FLUX.2 [dev] as a diffusers folder, plus its transformer in the original single-file layout."""
    _save(dev_pipeline(seed), folder)


def _save(pipe: Any, folder: Path) -> None:
    from diffusers import Flux2Transformer2DModel
    from safetensors.torch import save_file

    from extensions.flux2.original import flux2_to_original
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipe, folder)
    transformer = Flux2Transformer2DModel.from_pretrained(folder / "transformer")
    state = {key: value.contiguous() for key, value in flux2_to_original(transformer.state_dict()).items()}
    save_file(state, str(folder / SINGLE_FILE))
