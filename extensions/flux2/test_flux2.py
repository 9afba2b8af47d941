"""FLUX.2 adapters: the shared suite on Klein, diffusers' conventions, references, LoRA files, learning."""

from typing import Any

import pytest
import torch

from extensions.flux2.adapter import Flux2Adapter, patchify
from toolkit.testing.adapter_suite import AdapterSuite


def _raw(adapter: Flux2Adapter, latents: torch.Tensor) -> torch.Tensor:
    """easel's normalised latents -> the VAE's own (what the pipeline returns for output_type='latent')."""
    from extensions.flux2.adapter import unpatchify

    mean, std = adapter._bn(latents)
    return unpatchify(patchify(latents) * std + mean)


class TestFlux2Klein(AdapterSuite):
    arch = "flux2_klein_4b"
    latent_channels = 32
    sampler = "flowmatch"
    schedule_kind = "flowmatch"
    single_file = True

    def test_latents_are_the_pipelines_normalised_patches(self, adapter: Flux2Adapter) -> None:
        from toolkit.testing.adapter_suite import _pixels

        pixels = _pixels(64, 48)
        with torch.no_grad():
            ours = adapter.encode_images(pixels)
            theirs = adapter.pipeline()._encode_vae_image(pixels, generator=None)
        assert torch.allclose(patchify(ours), theirs, atol=1e-6)

    def test_euler_steps_with_predict_reproduce_the_pipeline(self, adapter: Flux2Adapter) -> None:
        steps, prompt = 3, "a red chair in a garden"
        noise = torch.randn(1, 32, 6, 8, generator=torch.Generator().manual_seed(5))
        pipe = adapter.pipeline()
        with torch.no_grad():
            expected = pipe(prompt=prompt, height=48, width=64, num_inference_steps=steps, guidance_scale=1.0,
                            latents=patchify(noise.clone()), output_type="latent").images
            sigmas = pipe.scheduler.sigmas.tolist()
            cond = adapter.encode_prompts([prompt])
            latents = noise.clone()
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
                latents = latents + (sigma_next - sigma) * adapter.predict(latents, torch.tensor([sigma * 1000.0]), cond).float()
        assert len(sigmas) == steps + 1 and sigmas[-1] == 0.0
        assert torch.allclose(_raw(adapter, latents), expected, atol=1e-4)

    def test_references_follow_the_pipeline(self, adapter: Flux2Adapter) -> None:
        """with_references + predict reproduce Flux2KleinPipeline's one step with two reference images."""
        from toolkit.models.pipeline_adapter import pil_to_pixels, pixels_to_pil

        images = [pixels_to_pil(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h)) * 2 - 1)[0]
                  for h, w in ((64, 96), (64, 64))]
        noise = torch.randn(1, 32, 6, 8, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected = adapter.pipeline()(image=images, prompt="put them together", height=48, width=64, num_inference_steps=1,
                                          guidance_scale=1.0, latents=patchify(noise.clone()), output_type="latent").images
            cond = adapter.with_references(adapter.encode_prompts(["put them together"]),
                                           [adapter.encode_images(pil_to_pixels([image])) for image in images])
            velocity = adapter.predict(noise, torch.tensor([1000.0]), cond)
        assert torch.allclose(_raw(adapter, noise - velocity), expected, atol=1e-4)
        edited = adapter.generate([self.request(references=images)])[0]
        assert edited.size == self.size and edited.tobytes() != adapter.generate([self.request()])[0].tobytes()

    def test_names_and_variants(self, registry: Any) -> None:
        klein, distilled = registry.arch("flux2_klein_4b"), registry.arch("flux2_klein_9b:distilled")
        assert klein.defaults["guidance_scale"] > 1 and distilled.defaults["sample_steps"] == 4
        assert registry.arch("flux2").spec.pipeline == "Flux2Pipeline" and registry.arch("flux2").spec.references.count == 10

    def test_img2img_runs_the_tail_of_the_txt2img_schedule(self, adapter: Flux2Adapter) -> None:
        """strength 0.5 of 4 steps: the last 2 sigmas the txt2img pipeline would use, no others."""
        from toolkit.models.pipeline_adapter import pixels_to_pil

        seen: list[float] = []
        hook = adapter.denoiser.register_forward_pre_hook(lambda module, args, kwargs: seen.append(float(kwargs["timestep"][0])),
                                                          with_kwargs=True)
        try:
            adapter.generate([self.request(steps=4)])
            full = list(seen)
            seen.clear()
            source = pixels_to_pil(torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1)[0]
            adapter.generate([self.request(steps=4, init_image=source, strength=0.5)])
        finally:
            hook.remove()
        assert len(full) == 4 and seen == pytest.approx(full[2:], abs=1e-5)


@pytest.mark.slow
class TestFlux2Dev(AdapterSuite):
    """The shared suite on FLUX.2 [dev] (Mistral3 text encoder, guidance embedding)."""

    arch = "flux2"
    latent_channels = 32
    sampler = "flowmatch"
    schedule_kind = "flowmatch"
    single_file = True

    def test_guidance_and_negative_prompt(self, adapter: Flux2Adapter) -> None:
        """[dev]'s guidance_scale feeds its guidance embedding (one pass); it has no negative prompt."""
        plain = adapter.generate([self.request(guidance_scale=4.0)])[0]
        other = adapter.generate([self.request(guidance_scale=1.5)])[0]
        negative = adapter.generate([self.request(guidance_scale=4.0, negative_prompt="a dog")])[0]
        assert plain.tobytes() != other.tobytes() and negative.tobytes() == plain.tobytes()

    def test_prompt_encoding_is_the_pipelines(self, adapter: Flux2Adapter) -> None:
        with torch.no_grad():
            ours = adapter.encode_prompts(["a cat", "a dog"])["prompt_embeds"]
            theirs = adapter.pipeline().encode_prompt(["a cat", "a dog"], device=adapter.device, max_sequence_length=512)[0]
        assert ours.shape == (2, 512, 96) and torch.equal(ours, theirs)


@pytest.fixture(scope="module")
def klein(registry: Any) -> Flux2Adapter:
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter

    return load_adapter(ModelConfig(name_or_path="tiny:flux2_klein_4b", arch="flux2_klein_4b"), registry, device="cpu")


def _image(adapter: Flux2Adapter) -> Any:
    import numpy as np

    from toolkit.models.base import GenerateRequest

    request = GenerateRequest(prompt="a photo of a cat", width=64, height=48, steps=2, guidance_scale=1.0, seed=3,
                              sampler="flowmatch")
    return np.asarray(adapter.generate([request])[0], dtype=np.float32)


def _diffusers_image(registry: Any, path: Any) -> Any:
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter

    fresh = load_adapter(ModelConfig(name_or_path="tiny:flux2_klein_4b", arch="flux2_klein_4b"), registry, device="cpu")
    fresh.pipeline().load_lora_weights(str(path))
    return _image(fresh)


def test_saved_lora_gives_the_same_image_in_diffusers(klein: Flux2Adapter, registry: Any, tmp_path: Any) -> None:
    from tests.lora_io.helpers import random_lora
    from toolkit.lora_io import LoraFile, apply_loras, remove_loras, save_lora

    state = random_lora(klein.components(), klein.lora_targets(False), seed=1, rank=4, alpha=2.0)
    base = _image(klein)
    apply_loras(klein, [(LoraFile.from_state_dict(state, "flux2_klein_4b"), 1.0)])
    try:
        ours = _image(klein)
    finally:
        remove_loras(klein)
    assert abs(ours - base).max() > 8 and abs(_image(klein) - base).max() == 0
    path = save_lora(state, tmp_path / "lora.safetensors", arch="flux2_klein_4b", registry=registry)
    assert abs(_diffusers_image(registry, path) - ours).max() <= 1.0


def test_ai_toolkit_flux2_file_loads_as_diffusers_reads_it(klein: Flux2Adapter, registry: Any, tmp_path: Any) -> None:
    """ai-toolkit / ComfyUI files: ``diffusion_model.`` + the original names, fused qkv (rank shared by q, k, v)."""
    from safetensors.torch import save_file

    from toolkit.lora_io import apply_loras, load_lora, remove_loras

    dim, generator = 32, torch.Generator().manual_seed(4)
    shapes = {"double_blocks.0.img_attn.qkv": (dim, 3 * dim), "double_blocks.0.txt_mlp.0": (dim, 6 * dim),
              "single_blocks.0.linear2": (4 * dim, dim)}
    state = {}
    for name, (features_in, features_out) in shapes.items():
        state[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(4, features_in, generator=generator) * 0.5
        state[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(features_out, 4, generator=generator) * 0.5
    path = tmp_path / "aitk.safetensors"
    save_file(state, str(path))
    lora = load_lora(path, adapter=klein)
    assert "via diffusers" in lora.format and len(lora.modules) == 3 + 1 + 1
    apply_loras(klein, [(lora, 1.0)])
    try:
        ours = _image(klein)
    finally:
        remove_loras(klein)
    theirs = _diffusers_image(registry, path)
    assert abs(theirs - _image(klein)).max() > 8 and abs(theirs - ours).max() <= 1.0


LEARN_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.linear_in", "ff.linear_out", "attn.to_qkv_mlp_proj",
                 "attn.to_out", "double_stream_modulation_img.linear", "single_stream_modulation.linear", "norm_out.linear",
                 "proj_out", "x_embedder"]
"""A random model needs its input, modulation and output layers adapted too (a real FLUX.2 keeps the defaults)."""


@pytest.mark.slow
def test_klein_learns_the_demo_palette(tmp_path: Any, registry: Any) -> None:
    import run
    from toolkit.testing.learning import learns

    learns(run.main, "flux2_klein_4b", LEARN_TARGETS, tmp_path, registry)


def test_8bit_base_streamed_block_by_block_trains_alike(registry: Any) -> None:
    from toolkit.testing.memory_check import assert_streamed_8bit_trains_alike

    assert_streamed_8bit_trains_alike(registry, "flux2_klein_4b", kept="double_stream_modulation_img.linear",
                                      quantized="single_transformer_blocks.0.attn.to_qkv_mlp_proj")
