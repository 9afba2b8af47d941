"""The tiny models: real module names, offline tokenizers, deterministic builds, the LDM layout."""

from pathlib import Path

import pytest
import torch

from extensions.sd15 import tiny as sd15_tiny
from extensions.sdxl import tiny as sdxl_tiny
from extensions.z_image import tiny as zimage_tiny
from families.unet.ldm import sd_pipeline_to_ldm
from toolkit.testing import tiny


@pytest.fixture(scope="module")
def sd15():
    return sd15_tiny.pipeline(seed=0)


def test_clip_tokenizer_covers_prompt_words() -> None:
    tokenizer = tiny.clip_tokenizer()
    ids = tokenizer(" ".join(tiny.WORDS))["input_ids"]
    assert tokenizer.unk_token_id not in ids[1:-1]
    words = tokenizer("a watercolor painting of a mountain lake")["input_ids"]
    assert len(words) == 2 + 7, "ordinary words are single tokens"
    assert tokenizer.decode(words, skip_special_tokens=True) == "a watercolor painting of a mountain lake"
    odd = tokenizer("zyxw 12 émigré!")["input_ids"]
    assert tokenizer.unk_token_id not in odd[1:-1], "any text falls back to byte-level pieces"
    assert tokenizer.model_max_length == 77


def test_qwen_tokenizer_chat_template_like_qwen3() -> None:
    tokenizer = tiny.qwen_tokenizer()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "a red chair"}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=True)
    assert text == "<|im_start|>user\na red chair<|im_end|>\n<|im_start|>assistant\n"
    no_think = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert tokens[0] == "<|im_start|>" and "<|im_end|>" in tokens and tokenizer.pad_token == "<|endoftext|>"


def test_builds_are_deterministic(tmp_path: Path) -> None:
    zimage_tiny.build(tmp_path / "a", seed=3)
    zimage_tiny.build(tmp_path / "b", seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    zimage_tiny.build(tmp_path / "c", seed=4)
    weights = Path("transformer") / "diffusion_pytorch_model.safetensors"
    assert (tmp_path / "c" / weights).read_bytes() != (tmp_path / "a" / weights).read_bytes()


def test_module_names_match_the_real_models(sd15) -> None:
    unet = dict(sd15.unet.named_modules())
    assert "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k" in unet
    assert "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj" in unet and "mid_block.attentions.0.proj_out" in unet
    assert "encoder.layers.1.self_attn.q_proj" in dict(sd15.text_encoder.named_modules())
    xl = dict(sdxl_tiny.pipeline(seed=0).unet.named_modules())
    assert "down_blocks.2.attentions.1.transformer_blocks.1.attn1.to_out.0" in xl and "add_embedding.linear_1" in xl
    z = zimage_tiny.pipeline(seed=0)
    names = dict(z.transformer.named_modules())
    for name in ("layers.1.attention.to_q", "layers.0.feed_forward.w3", "noise_refiner.0.attention.to_out.0",
                 "context_refiner.0.feed_forward.w1", "layers.1.adaLN_modulation.0"):
        assert name in names, name
    assert "layers.1.mlp.gate_proj" in dict(z.text_encoder.named_modules())


def test_ldm_layout_has_the_original_key_names(sd15) -> None:
    state = sd_pipeline_to_ldm(sd15)
    for key in ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                "model.diffusion_model.input_blocks.3.0.op.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.middle_block.2.out_layers.3.weight", "model.diffusion_model.output_blocks.2.1.conv.weight",
                "model.diffusion_model.output_blocks.5.2.conv.weight", "model.diffusion_model.out.2.bias",
                "model.diffusion_model.time_embed.0.weight", "first_stage_model.decoder.up.0.block.1.conv2.weight",
                "first_stage_model.encoder.down.0.downsample.conv.weight", "first_stage_model.decoder.norm_out.bias",
                "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"):
        assert key in state, key
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    total = sum(len(getattr(sd15, c).state_dict()) for c in ("unet", "vae", "text_encoder"))
    assert len(state) == total


def test_random_lora_file(sd15, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    path = tiny.save_random_lora(sd15, tmp_path / "l.safetensors", {"unet": ["to_q"], "text_encoder": ["q_proj"]}, rank=2)
    state = load_file(path)
    assert any(k.startswith("unet.") and ".to_q.lora_A" in k for k in state)
    assert any(k.startswith("text_encoder.") and ".q_proj.lora_B" in k for k in state)
    assert all(v.abs().sum() > 0 for v in state.values())
    assert not any("lora" in name for name, _ in sd15.unet.named_parameters()), "the pipeline's own modules stay untouched"
    assert torch.is_tensor(next(iter(state.values())))
