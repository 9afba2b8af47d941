"""``tiny:flux`` and ``tiny:flux_kontext``: tiny random FLUX.1 models with the real block structure, built in code.

One double-stream and one single-stream block (real module names, guidance embedding as in dev), a 2-layer CLIP
text encoder for the pooled vector, a 2-layer T5 encoder with an offline unigram tokenizer, and the 16-channel
fitted VAE; written as a diffusers folder. No single file: diffusers' FLUX.1 single-file converter assumes the
full model's width (3072), which no tiny model has.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=None)
def _t5_pieces() -> tuple[tuple[str, float], ...]:
    """A unigram vocabulary: T5's special tokens, the test word list as whole words, single characters."""
    from toolkit.testing.tiny import WORDS

    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -10.0}
    for word in WORDS:
        pieces.setdefault("▁" + word, -5.0 - len(pieces) * 1e-3)
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -20.0)
        pieces.setdefault("▁" + char, -19.0)
    return tuple(pieces.items())


def t5_tokenizer() -> Any:
    """A T5 tokenizer (unigram, ``</s>`` appended, ``<pad>`` = 0) over the small English vocabulary."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=list(_t5_pieces()), extra_ids=0, model_max_length=512)


def tiny_t5(tokenizer: Any, seed: int, hidden: int = 32) -> Any:
    """A 2-layer T5 encoder (FLUX.1 reads its last hidden states)."""
    import torch
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=hidden, d_kv=16, d_ff=2 * hidden, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()


def pipeline(seed: int = 0, kontext: bool = False) -> Any:
    """The tiny FLUX.1 (or Kontext) pipeline in memory, deterministic for ``seed``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

    from toolkit.testing.tiny import clip_tokenizer, tiny_clip, tiny_vae

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe_class = FluxKontextPipeline if kontext else FluxPipeline
    return pipe_class(
        scheduler=scheduler, vae=tiny_vae(seed + 1, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
        text_encoder=tiny_clip(tokenizer, seed + 2), tokenizer=tokenizer, text_encoder_2=tiny_t5(tokenizer_2, seed + 3),
        tokenizer_2=tokenizer_2, transformer=transformer,
    )


def build(folder: Path, seed: int = 0) -> None:
    """Write the tiny FLUX.1 as a diffusers folder."""
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipeline(seed), folder)


def build_kontext(folder: Path, seed: int = 0) -> None:
    """Write the tiny FLUX.1 Kontext as a diffusers folder."""
    from toolkit.testing.tiny import save_pipeline

    save_pipeline(pipeline(seed, kontext=True), folder)
