"""The pieces every architecture's tiny random model is built from, in code, with no download.

Each architecture's ``tiny.py`` (``extensions/<arch>/tiny.py``, registered as its ``ArchSpec.tiny``) composes
these: tokenizers trained offline with the ``tokenizers`` library on a small English word list and wrapped in
the transformers classes the real pipelines use (CLIP, Qwen2), 2-layer CLIP and Qwen3 text encoders, a
4-level VAE with fitted weights, ``save_pipeline``, and ``save_random_lora`` for LoRA tests. The models keep
the real block structure (so LoRA target names match the real models) with very few channels; weights are
deterministic for a given seed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

WORDS = """
a an the of in on at with and or by for to from under over near behind beside inside outside
photo photograph picture image portrait painting drawing sketch illustration render artwork poster
style art artistic realistic photorealistic cinematic anime cartoon watercolor oil pencil ink digital
detailed high quality best masterpiece sharp focus blurry soft hard light lighting shadow dark bright
golden hour sunset sunrise night day morning evening studio natural dramatic moody warm cold
cat dog bird horse fish animal person people man woman girl boy child face eyes hair hands smile
red orange yellow green blue purple pink black white gray brown colorful pastel vivid muted
sky cloud clouds sun moon star stars rain snow fog storm wind water river lake sea ocean beach wave
mountain mountains hill forest tree trees flower flowers garden grass field desert island valley
city street road building house castle tower bridge room window door table chair car train boat
sitting standing walking running flying looking holding wearing dress shirt hat jacket
small large big tiny old young beautiful cute happy sad calm wild ancient modern futuristic
background foreground close up wide shot view scene landscape cityscape interior exterior
cartoonish ugly bad worst low lowres jpeg artifacts deformed text watermark signature
sks ohwx trigger token easel lora style subject concept
""".split()

_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_QWEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
"""Qwen3's chat template, reduced to what prompt encoding uses (user turns, generation prompt, thinking switch)."""


def _corpus() -> list[str]:
    lines = [" ".join(WORDS[i:i + 12]) for i in range(0, len(WORDS), 12)]
    return lines + [" " + " ".join(WORDS)] + [w.capitalize() for w in WORDS] + ["user assistant system, . ! ? : ; ( ) 0 1 2 3 4 5 6 7 8 9"]


def _train_bpe(tokenizer: Any, vocab_size: int, special: list[str], suffix: str | None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import pre_tokenizers, trainers

    options: dict[str, Any] = {"end_of_word_suffix": suffix} if suffix else {}
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **options)
    tokenizer.train_from_iterator(_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges  # type: ignore[return-value]


@functools.lru_cache(maxsize=None)
def _clip_vocab() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    raw = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    raw.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    vocab, merges = _train_bpe(raw, 4000, ["<|startoftext|>", "<|endoftext|>"], "</w>")
    for char in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(char + "</w>", len(vocab))
    return tuple(vocab.items()), tuple(merges)


@functools.lru_cache(maxsize=None)
def _qwen_vocab() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    vocab, merges = _train_bpe(raw, 4000, ["<|endoftext|>"], None)
    return tuple(vocab.items()), tuple(merges)


ASSETS = Path(__file__).resolve().parent / "assets"
FITTED_VAE = {4: ASSETS / "tiny_vae_4ch.safetensors", 16: ASSETS / "tiny_vae_16ch.safetensors"}
"""Fitted tiny VAE weights by latent channels (SD layout with quant convs; Z-Image layout without)."""


def clip_tokenizer() -> Any:
    """A CLIPTokenizer (byte-level BPE with ``</w>`` word ends) over a small English vocabulary."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def qwen_tokenizer() -> Any:
    """A Qwen2Tokenizer (byte-level BPE) with Qwen's chat special tokens and chat template."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _qwen_vocab()
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=512, chat_template=QWEN_CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


def tiny_clip(tokenizer: Any, seed: int, *, projection: bool = False, hidden: int = 32) -> Any:
    """A 2-layer CLIP text encoder (``CLIPTextModelWithProjection`` when ``projection``)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def tiny_qwen3(tokenizer: Any, seed: int, hidden: int = 32) -> Any:
    """A 2-layer Qwen3 text model (Z-Image reads its second-to-last hidden states)."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return Qwen3Model(config).eval()


def tiny_vae(seed: int, *, latent_channels: int = 4, scaling_factor: float = 0.18215,
             shift_factor: float | None = None, quant_conv: bool = True, fitted: bool = True) -> Any:
    """An AutoencoderKL with the real 4-level layout (8x downsampling) and 4-16 channels.

    With ``fitted`` (and the asset present) the weights come from ``assets/tiny_vae_<n>ch.safetensors``
    (made by ``python -m toolkit.testing.fit_vae``), so images really round-trip and samples show colours;
    its measured latent scaling replaces ``scaling_factor`` (and ``shift_factor`` where one is used).
    """
    import torch
    from diffusers import AutoencoderKL

    weights = FITTED_VAE.get(latent_channels)
    state = _fitted_state(weights) if fitted and weights is not None and weights.is_file() else None
    if state is not None:
        scaling_factor = round(float(state.pop("easel.scaling_factor")), 4)
        shift = round(float(state.pop("easel.shift_factor")), 4)
        shift_factor = shift if shift_factor is not None else None
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=4, sample_size=64,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
        use_quant_conv=quant_conv, use_post_quant_conv=quant_conv,
    )
    if state is not None:
        vae.load_state_dict(state)
    return vae.eval()


def _fitted_state(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def save_pipeline(pipe: "DiffusionPipeline", folder: Path) -> None:
    """Write a tiny pipeline as a diffusers folder (safetensors), as an architecture's ``tiny.build`` does."""
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)


def save_random_lora(pipe: "DiffusionPipeline", path: Path, targets: dict[str, list[str]], *, rank: int = 4,
                     seed: int = 0, scale: float = 0.5) -> Path:
    """Write a LoRA with random A and B for ``targets`` ({component: module suffixes}) via peft + diffusers.

    The pipeline's own modules are left untouched (the adapter is added to copies).
    """
    import copy

    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    layers: dict[str, dict[str, Any]] = {}
    torch.manual_seed(seed)
    for component, modules in targets.items():
        module = copy.deepcopy(getattr(pipe, component))
        module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=modules, init_lora_weights=False))
        with torch.no_grad():
            for name, param in module.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn_like(param) * scale)
        layers[f"{component}_lora_layers"] = get_peft_model_state_dict(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(str(path.parent), weight_name=path.name, **layers)
    return path


def randomize_zero_layers(module: Any, seed: int, scale: float = 0.3) -> None:
    """Give the zero-initialised layers (a fresh ControlNet's output convolutions) random weights, so a tiny
    random ControlNet changes the image it steers."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
