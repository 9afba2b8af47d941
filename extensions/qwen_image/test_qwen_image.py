"""Qwen-Image adapter: the shared suite, diffusers' conventions (prompt template, packed latents, video VAE, dynamic
shift, true CFG), LoRA files diffusers loads to the same image."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from extensions.qwen_image.adapter import QwenImageAdapter
from toolkit.config.blocks import ModelConfig
from toolkit.models.loading import load_adapter
from toolkit.testing.adapter_suite import AdapterSuite, _pixels


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents in the pipeline's packed layout (B, H/2 * W/2, 4C)."""
    from diffusers import QwenImagePipeline

    b, c, h, w = latents.shape
    return QwenImagePipeline._pack_latents(latents, b, c, h, w)


class QwenImageSuite(AdapterSuite):
    """The shared suite with Qwen-Image's video VAE (one frame in, latents normalised per channel)."""

    latent_channels = 16
    sampler = "flowmatch"
    schedule_kind = "flowmatch"
    single_file = True
    trains_text_encoder = False

    def test_encode_decode_round_trip(self, adapter: QwenImageAdapter) -> None:
        """The video VAE sees one frame; latents are normalised by its per-channel mean and std."""
        width, height = self.size
        pixels = _pixels(width, height)
        with torch.no_grad():
            latents = adapter.encode_images(pixels)
            decoded = adapter.decode_latents(latents)
            raw = adapter.vae.decode(adapter.vae.encode(pixels[:, :, None]).latent_dist.mode()).sample[:, :, 0].clamp(-1, 1)
        config = adapter.vae.config
        mean, std = torch.tensor(config.latents_mean).view(1, -1, 1, 1), torch.tensor(config.latents_std).view(1, -1, 1, 1)
        assert latents.shape == (1, 16, height // 8, width // 8)
        assert decoded.shape == pixels.shape and torch.allclose(decoded, raw, atol=1e-5)
        with torch.no_grad():
            direct = adapter.vae.encode(pixels[:, :, None]).latent_dist.mode()[:, :, 0]
        assert torch.allclose(latents, (direct - mean) / std, atol=1e-5)


class TestQwenImage(QwenImageSuite):
    arch = "qwen_image"

    def test_prompt_encoding_matches_the_pipeline(self, adapter: QwenImageAdapter) -> None:
        prompts = ["a photo of a cat", "a watercolor painting of a lake at sunset with mountains"]
        with torch.no_grad():
            cond = adapter.encode_prompts(prompts)
            embeds, mask = adapter.pipeline().encode_prompt(prompts, device=adapter.device)
        assert cond["prompt_embeds"].shape[:2] == cond["prompt_mask"].shape == (2, 512)
        for row, keep, expected, real in zip(cond["prompt_embeds"], cond["prompt_mask"], embeds, mask.bool()):
            assert torch.allclose(row[keep], expected[real], atol=1e-6)
            assert not row[~keep].any()

    def test_predict_is_the_velocity_the_pipeline_steps_with(self, adapter: QwenImageAdapter) -> None:
        """Euler steps x += (sigma_next - sigma) * predict(x, sigma * 1000) on the pipeline's (resolution-shifted)
        sigmas reproduce QwenImagePipeline's packed latents."""
        steps, prompt = 4, "a red chair in a garden"
        noise = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(5))
        pipe = adapter.pipeline()
        with torch.no_grad():
            expected = pipe(prompt, height=48, width=64, num_inference_steps=steps, true_cfg_scale=1.0,
                            latents=pack(noise), output_type="latent").images
            sigmas = pipe.scheduler.sigmas.tolist()
            cond = adapter.encode_prompts([prompt])
            latents = noise.clone()
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
                latents = latents + (sigma_next - sigma) * adapter.predict(latents, torch.tensor([sigma * 1000.0]), cond)
        assert len(sigmas) == steps + 1 and sigmas[-2] == pytest.approx(0.02)  # Qwen-Image's shift_terminal
        assert torch.allclose(pack(latents), expected, atol=1e-5)

    def test_guidance_is_true_cfg_and_costs_a_second_pass(self, adapter: QwenImageAdapter) -> None:
        calls: list[int] = []
        hook = adapter.denoiser.register_forward_hook(lambda module, args, kwargs, out: calls.append(1), with_kwargs=True)
        try:
            plain = adapter.generate([self.request(steps=3, guidance_scale=1.0, negative_prompt="blurry")])[0]
            assert len(calls) == 3
            calls.clear()
            guided = adapter.generate([self.request(steps=3, guidance_scale=4.0, negative_prompt="blurry")])[0]
            assert len(calls) == 6
        finally:
            hook.remove()
        with torch.no_grad():
            generator = torch.Generator().manual_seed(7)
            expected = adapter.pipeline()(self.request().prompt, negative_prompt="blurry", true_cfg_scale=4.0,
                                          width=64, height=48, num_inference_steps=3, generator=generator).images[0]
        assert guided.tobytes() == expected.tobytes() != plain.tobytes()

    def test_training_shift_follows_the_resolution_and_flow_shift_fixes_it(self, adapter: QwenImageAdapter,
                                                                             registry: Any) -> None:
        by_size = adapter.noise_schedule().resolution_shift
        assert by_size is not None and by_size.patch_size == 2 and (by_size.max_seq_len, by_size.max_shift) == (8192, 0.9)
        assert by_size.shift(32, 32) < by_size.shift(128, 128) < by_size.shift(166, 166)
        config = ModelConfig(name_or_path="tiny:qwen_image", arch="qwen_image", model_kwargs={"flow_shift": 3.0})
        fixed = load_adapter(config, registry, device="cpu")
        assert fixed.noise_schedule().resolution_shift is None and fixed.noise_schedule().shift == 3.0
        assert fixed.scheduler_overrides() == {"use_dynamic_shifting": False, "shift": 3.0}
        shifted, default = (model.generate([self.request(steps=3)])[0] for model in (fixed, adapter))
        assert shifted.tobytes() != default.tobytes()

    def test_variants_and_ai_toolkit_names(self, registry: Any) -> None:
        base, later = registry.arch("qwen_image"), registry.arch("qwen_image:2512")
        assert (base.name, later.name) == ("qwen_image", "qwen_image:2512")
        assert base.defaults["sample_steps"] == 50 and base.defaults["guidance_scale"] > 1


@pytest.mark.parametrize("fmt", ["default", "diffusers", "kohya"])
def test_saved_lora_gives_diffusers_the_same_image(fmt: str, registry: Any, tmp_path: Path) -> None:
    """A LoRA saved in ComfyUI's layout (the default), diffusers' or kohya's: diffusers' own ``load_lora_weights``
    on a fresh pipeline gives the image easel gives with it (alpha 2 at rank 4, so the scaling is checked too)."""
    from safetensors import safe_open

    from tests.lora_io.helpers import random_lora
    from toolkit.lora_io import apply_loras, remove_loras, save_lora

    ours = load_adapter(ModelConfig(name_or_path="tiny:qwen_image", arch="qwen_image"), registry, device="cpu")
    request = AdapterSuite.request(TestQwenImage(), steps=3)
    state = random_lora(ours.components(), ours.lora_targets(False), rank=4, alpha=2.0, seed=2, scale=0.4)
    path = save_lora(state, tmp_path / "lora.safetensors", arch="qwen_image", registry=registry,
                     format=None if fmt == "default" else fmt)
    prefix = {"default": "diffusion_model.transformer_blocks.", "diffusers": "transformer.transformer_blocks.",
              "kohya": "lora_unet_transformer_blocks_"}[fmt]
    with safe_open(str(path), "pt") as handle:
        assert all(key.startswith(prefix) for key in handle.keys())
    base = ours.generate([request])[0]
    apply_loras(ours, [(path, 1.0)])
    try:
        easel = ours.generate([request])[0]
    finally:
        remove_loras(ours)
    theirs = load_adapter(ModelConfig(name_or_path="tiny:qwen_image", arch="qwen_image"), registry, device="cpu")
    theirs.pipeline().load_lora_weights(str(path))
    diffusers_image = theirs.generate([request])[0]
    assert np.abs(np.asarray(easel, dtype=int) - np.asarray(base, dtype=int)).max() > 8, "the LoRA changes the image"
    assert np.abs(np.asarray(easel, dtype=int) - np.asarray(diffusers_image, dtype=int)).max() <= 1


def run_config(tmp_path: Path, name: str, data: Path, *, steps: int, train: dict[str, Any], model: dict[str, Any],
               network: dict[str, Any] | None = None) -> Path:
    """A lora_trainer config for ``tiny:qwen_image`` written to ``tmp_path`` (64 px, cached latents, CPU, fp32)."""
    import json

    process = {
        "type": "lora_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu", "trigger_word": "warmstyle",
        "network": network or {"type": "lora", "linear": 4, "linear_alpha": 4}, "save": {"dtype": "fp32"},
        "datasets": [{"folder_path": str(data), "resolution": [64], "cache_latents": True}],
        "train": {"steps": steps, "batch_size": 4, "lr": 5e-3, "seed": 3, "dtype": "fp32", "disable_sampling": True,
                  "timestep_type": "shift", **train},
        "model": {"name_or_path": "tiny:qwen_image", "arch": "qwen_image", **model},
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"job": "extension", "config": {"name": name, "process": [process]}}))
    return path


@pytest.mark.slow
def test_trains_on_a_quantized_low_vram_offloaded_compiled_base(registry: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory options together through run.py: an 8-bit transformer and text encoder, low_vram, half the blocks
    streamed, every second block checkpointed, cached text with the encoder unloaded, compiled blocks."""
    import torch._dynamo

    import run
    from toolkit.models import memory
    from toolkit.testing.demo import make

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")  # Dynamo's tracing without code generation (fast)
    torch._dynamo.reset()
    make(tmp_path / "demo", 4)
    path = run_config(tmp_path, "qlow", tmp_path / "demo", steps=3,
                      model={"quantize": True, "qtype": "qint8", "quantize_te": True, "qtype_te": "qint8", "low_vram": True,
                             "layer_offloading": True, "layer_offloading_fraction": 0.5},
                      train={"gradient_checkpointing": True, "gradient_checkpointing_interval": 2, "compile": True,
                             "cache_text_embeddings": True, "unload_text_encoder": True})
    try:
        assert run.main([str(path)]) == 0
    finally:
        torch._dynamo.reset()
    log = (tmp_path / "out" / "qlow" / "log.txt").read_text()
    assert "transformer: 28 linear layers quantized to qint8 (6 kept in full precision)" in log
    assert "text_encoder: " in log and "quantized to qint8" in log
    assert "text_encoder, vae moved to the CPU for training" in log
    assert "layer offloading: 1 of 2 transformer blocks stay in CPU memory" in log
    assert "torch.compile: 1 transformer blocks" in log
    from safetensors.torch import load_file

    lora = load_file(str(tmp_path / "out" / "qlow" / "qlow.safetensors"))
    ups = {key: value for key, value in lora.items() if key.endswith("lora_B.weight")}
    assert len(ups) == 2 * 12 - 4 and all(value.abs().sum() > 0 for value in ups.values())  # B starts at zero


@pytest.mark.slow
def test_the_lora_learns_the_datasets_latents(registry: Any, tmp_path: Path) -> None:
    """200 steps on the one-palette demo set: the loss falls, and the samples' mean latent (per channel) moves most of
    the way to the dataset's. Measured in latent space: the tiny VAE is random, so its decoded colours say little."""
    import run
    from diffusers import QwenImagePipeline

    from toolkit.lora_io import apply_loras, remove_loras
    from toolkit.models.pipeline_adapter import pil_to_pixels
    from toolkit.testing.demo import make
    from toolkit.train.logs import read_losses

    make(tmp_path / "demo", 16)
    # A random model needs its input and output layers adapted too (as the quickstart's tiny Z-Image does).
    targets = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_v_proj",
               "img_mlp.net.0.proj", "img_mlp.net.2", "img_in", "proj_out", "norm_out.linear"]
    path = run_config(tmp_path, "qlearn", tmp_path / "demo", steps=200, train={"gradient_checkpointing": False},
                      model={}, network={"type": "lora", "linear": 8, "linear_alpha": 8, "target_modules": targets})
    assert run.main([str(path)]) == 0
    losses = [row["loss"] for row in read_losses(tmp_path / "out" / "qlearn" / "loss.csv")]
    assert len(losses) == 200 and np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20])

    adapter = load_adapter(ModelConfig(name_or_path="tiny:qwen_image", arch="qwen_image"), registry, device="cpu")
    from PIL import Image

    images = [Image.open(p).convert("RGB").resize((64, 64)) for p in sorted((tmp_path / "demo").glob("*.png"))]
    prompts = [f"warmstyle a painting of a {subject}" for subject in ("house", "boat", "cat", "tree")]

    def mean_latent() -> torch.Tensor:
        found = []
        for index, prompt in enumerate(prompts):
            packed = adapter.pipeline()(prompt, height=64, width=64, num_inference_steps=8, true_cfg_scale=1.0,
                                        generator=torch.Generator().manual_seed(100 + index), output_type="latent").images
            found.append(QwenImagePipeline._unpack_latents(packed, 64, 64, 8)[:, :, 0])
        return torch.cat(found).mean(dim=(0, 2, 3))

    with torch.no_grad():
        target = torch.cat([adapter.encode_images(pil_to_pixels([image])) for image in images]).mean(dim=(0, 2, 3))
        base = mean_latent()
        apply_loras(adapter, [(tmp_path / "out" / "qlearn" / "qlearn.safetensors", 1.0)])
        try:
            styled = mean_latent()
        finally:
            remove_loras(adapter)
    assert (styled - target).norm() <= 0.5 * (base - target).norm()
