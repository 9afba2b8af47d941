"""FLUX.1 and Kontext adapters: the shared suite, diffusers' conventions, guidance, references."""

from typing import Any

import pytest
import torch

from extensions.flux.adapter import FluxAdapter
from toolkit.testing.adapter_suite import AdapterSuite


class TestFlux(AdapterSuite):
    arch = "flux"
    latent_channels = 16
    sampler = "flowmatch"
    schedule_kind = "flowmatch"

    def test_prompt_encoding_matches_the_pipeline(self, adapter: FluxAdapter) -> None:
        prompts = ["a photo of a cat", "a watercolor painting of a lake"]
        with torch.no_grad():
            cond = adapter.encode_prompts(prompts)
            embeds, pooled, _ = adapter.pipeline().encode_prompt(prompts, device=adapter.device, max_sequence_length=512)
        assert cond["prompt_embeds"].shape[:2] == (2, 512)
        assert torch.allclose(cond["prompt_embeds"], embeds) and torch.allclose(cond["pooled_prompt_embeds"], pooled)

    def test_euler_steps_with_predict_reproduce_the_pipeline(self, adapter: FluxAdapter) -> None:
        """predict (t = sigma * 1000, guidance 3.5 as the pipeline's) reproduces FluxPipeline's latents."""
        from extensions.flux.adapter import pack

        steps, prompt = 3, "a red chair in a garden"
        noise = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(5))
        config = adapter.config.model_copy(update={"model_kwargs": {"train_guidance": 3.5}})
        guided = type(adapter)(adapter.pipe, config, adapter.arch, adapter.device, adapter.dtype)
        with torch.no_grad():
            expected = adapter.pipeline()(prompt, height=48, width=64, num_inference_steps=steps, guidance_scale=3.5,
                                          latents=pack(noise.clone()), output_type="latent").images
            scheduler = adapter.pipeline().scheduler
            sigmas = scheduler.sigmas.tolist()
            cond = guided.encode_prompts([prompt])
            latents = noise.clone()
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
                velocity = guided.predict(latents, torch.tensor([sigma * 1000.0]), cond)
                latents = latents + (sigma_next - sigma) * velocity.float()
        assert len(sigmas) == steps + 1 and sigmas[-1] == 0.0
        assert torch.allclose(pack(latents), expected, atol=1e-4)

    def test_guidance_and_negative_prompt(self, adapter: FluxAdapter) -> None:
        """FLUX.1 dev's guidance_scale feeds its guidance embedding; a negative prompt acts only with true CFG."""
        plain = adapter.generate([self.request(guidance_scale=3.5)])[0]
        other = adapter.generate([self.request(guidance_scale=1.5)])[0]
        negative = adapter.generate([self.request(guidance_scale=3.5, negative_prompt="a dog")])[0]
        assert plain.tobytes() != other.tobytes() and negative.tobytes() == plain.tobytes()
        config = adapter.config.model_copy(update={"model_kwargs": {"true_cfg_scale": 4.0}})
        cfg = type(adapter)(adapter.pipe, config, adapter.arch, adapter.device, adapter.dtype)
        dog, blurry = (cfg.generate([self.request(guidance_scale=3.5, negative_prompt=n)])[0] for n in ("a dog", "blurry"))
        assert dog.tobytes() != blurry.tobytes() != plain.tobytes()

    def test_training_shift_follows_the_pipelines_mu(self, adapter: FluxAdapter) -> None:
        import math

        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        schedule = adapter.noise_schedule()
        assert schedule.resolution_shift is not None
        assert schedule.resolution_shift.shift(128, 128) == pytest.approx(math.exp(calculate_shift(4096)))

    def test_variants_and_ai_toolkit_names(self, registry: Any) -> None:
        from toolkit.config.blocks import ModelConfig

        dev, schnell = registry.arch("flux"), registry.arch("flux:schnell")
        assert (dev.name, dev.defaults["sample_steps"], schnell.defaults["sample_steps"]) == ("flux", 28, 4)
        assert registry.arch("flex1").spec is dev.spec and registry.arch("flux_kontext").spec.references is not None
        legacy = ModelConfig.model_validate({"name_or_path": "x", "is_flux": True}, context={"registry": registry})
        assert legacy.arch == "flux"


@pytest.mark.slow
class TestFluxKontext(AdapterSuite):
    """The shared suite on Kontext (the same model as FLUX.1 plus its reference tokens)."""

    arch = "flux_kontext"
    latent_channels = 16
    sampler = "flowmatch"
    schedule_kind = "flowmatch"

    test_guidance_and_negative_prompt = TestFlux.test_guidance_and_negative_prompt


@pytest.fixture(scope="module")
def kontext(registry: Any) -> FluxAdapter:
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter

    return load_adapter(ModelConfig(name_or_path="tiny:flux_kontext", arch="flux_kontext"), registry, device="cpu")


def _picture(seed: int) -> Any:
    from toolkit.models.pipeline_adapter import pixels_to_pil

    return pixels_to_pil(torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1)[0]


def test_kontext_reference_tokens_follow_the_pipeline(kontext: FluxAdapter) -> None:
    """with_references + predict reproduce FluxKontextPipeline's step on the same reference."""
    from extensions.flux.adapter import pack
    from toolkit.models.pipeline_adapter import pil_to_pixels

    reference = _picture(1)
    noise = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(5))
    config = kontext.config.model_copy(update={"model_kwargs": {"train_guidance": 2.5}})
    guided = type(kontext)(kontext.pipe, config, kontext.arch, kontext.device, kontext.dtype)
    with torch.no_grad():
        expected = kontext.pipeline()(image=reference, prompt="make it red", height=48, width=64, num_inference_steps=1,
                                      guidance_scale=2.5, latents=pack(noise.clone()), output_type="latent",
                                      _auto_resize=False, max_area=64 * 48).images
        cond = guided.encode_prompts(["make it red"])
        edited = guided.with_references(cond, [guided.encode_images(pil_to_pixels([reference]))])
        plain = guided.predict(noise, torch.tensor([1000.0]), cond)
        velocity = guided.predict(noise, torch.tensor([1000.0]), edited)
    assert torch.allclose(pack(noise - velocity), expected, atol=1e-4)
    assert not torch.allclose(plain, velocity, atol=1e-3)


def test_kontext_generation_edits_the_reference(kontext: FluxAdapter) -> None:
    from toolkit.models.base import GenerateRequest

    def request(**extra: Any) -> GenerateRequest:
        return GenerateRequest(prompt="make it red", width=64, height=48, steps=2, guidance_scale=2.5, seed=7,
                               sampler="flowmatch", **extra)

    first, second = _picture(1), _picture(2)
    images = kontext.generate([request(references=[first]), request(references=[first]), request(references=[second])])
    assert images[0].size == (64, 48) and images[0].tobytes() == images[1].tobytes() != images[2].tobytes()
    assert images[0].tobytes() != kontext.generate([request()])[0].tobytes()


def _kohya_file(adapter: FluxAdapter, path: Any, rank: int = 4) -> Any:
    """A LoRA in sd-scripts' FLUX.1 layout (original module names, fused qkv), random weights. (No ``linear1``:
    diffusers' converter splits it at the full model's widths.)"""
    from safetensors.torch import save_file

    config, generator = adapter.denoiser.config, torch.Generator().manual_seed(4)
    dim = config.num_attention_heads * config.attention_head_dim
    mlp = adapter.denoiser.single_transformer_blocks[0].proj_mlp.out_features
    shapes = {"double_blocks_0_img_attn_qkv": (dim, 3 * dim), "double_blocks_0_txt_attn_proj": (dim, dim),
              "double_blocks_0_img_mlp_0": (dim, 4 * dim), "single_blocks_0_linear2": (dim + mlp, dim)}
    state = {}
    for name, (features_in, features_out) in shapes.items():
        state[f"lora_unet_{name}.lora_down.weight"] = torch.randn(rank, features_in, generator=generator) * 0.5
        state[f"lora_unet_{name}.lora_up.weight"] = torch.randn(features_out, rank, generator=generator) * 0.5
        state[f"lora_unet_{name}.alpha"] = torch.tensor(2.0)
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def flux(registry: Any) -> FluxAdapter:
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter

    return load_adapter(ModelConfig(name_or_path="tiny:flux", arch="flux"), registry, device="cpu")


def _image(adapter: FluxAdapter) -> Any:
    import numpy as np

    from toolkit.models.base import GenerateRequest

    request = GenerateRequest(prompt="a photo of a cat", width=64, height=48, steps=2, guidance_scale=3.5, seed=3,
                              sampler="flowmatch")
    return np.asarray(adapter.generate([request])[0], dtype=np.float32)


def _fresh(registry: Any) -> FluxAdapter:
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter

    return load_adapter(ModelConfig(name_or_path="tiny:flux", arch="flux"), registry, device="cpu")


@pytest.mark.parametrize("fmt", ["comfy", "diffusers"])
def test_saved_lora_gives_the_same_image_in_diffusers(flux: FluxAdapter, registry: Any, tmp_path: Any, fmt: str) -> None:
    """comfy (FLUX.1: ``transformer.*`` with alpha tensors, what ComfyUI and diffusers read) and diffusers files."""
    from safetensors import safe_open

    from tests.lora_io.helpers import random_lora
    from toolkit.lora_io import LoraFile, apply_loras, remove_loras, save_lora

    state = random_lora(flux.components(), flux.lora_targets(False), seed=1, rank=4, alpha=2.0)
    base = _image(flux)
    apply_loras(flux, [(LoraFile.from_state_dict(state, "flux"), 1.0)])
    try:
        ours = _image(flux)
    finally:
        remove_loras(flux)
    assert abs(ours - base).max() > 8 and abs(_image(flux) - base).max() == 0
    path = save_lora(state, tmp_path / "lora.safetensors", arch="flux", format=fmt, registry=registry)
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert all(k.startswith("transformer.") for k in keys) and any(k.endswith(".alpha") for k in keys) == (fmt == "comfy")
    fresh = _fresh(registry)
    fresh.pipeline().load_lora_weights(str(path))
    assert abs(_image(fresh) - ours).max() <= 1.0


def test_kohya_flux_file_loads_as_diffusers_reads_it(flux: FluxAdapter, registry: Any, tmp_path: Any) -> None:
    """sd-scripts' ``lora_unet_double_blocks_0_img_attn_qkv`` files (fused layers) give diffusers' image in easel."""
    from toolkit.lora_io import apply_loras, load_lora, remove_loras

    path = _kohya_file(flux, tmp_path / "kohya.safetensors")
    lora = load_lora(path, adapter=flux)
    assert "via diffusers" in lora.format and len(lora.modules) == 3 + 1 + 1 + 1
    apply_loras(flux, [(lora, 1.0)])
    try:
        ours = _image(flux)
    finally:
        remove_loras(flux)
    fresh = _fresh(registry)
    fresh.pipeline().load_lora_weights(str(path))
    theirs = _image(fresh)
    assert abs(theirs - _image(flux)).max() > 8 and abs(theirs - ours).max() <= 1.0


LEARN_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_v_proj", "ff.net.0.proj",
                 "ff.net.2", "proj_mlp", "norm.linear", "norm1.linear", "norm_out.linear", "proj_out", "x_embedder"]
"""A random model needs its input, modulation and output layers adapted too (a real FLUX.1 keeps the defaults)."""


@pytest.mark.slow
def test_flux_learns_the_demo_palette(tmp_path: Any, registry: Any) -> None:
    import run
    from toolkit.testing.learning import learns

    learns(run.main, "flux", LEARN_TARGETS, tmp_path, registry)


def test_generate_job_makes_one_edit_per_reference_image(tmp_path: Any, capsys: Any) -> None:
    import json

    import run

    for seed, name in enumerate(("a", "b")):
        _picture(seed).save(tmp_path / f"{name}.png")
    process = {"type": "to_folder", "output_folder": str(tmp_path / "out"),
               "generate": {"prompts": ["make it red", "make it blue"], "reference_images": str(tmp_path), "seed": 1,
                            "width": 64, "height": 48},
               "model": {"name_or_path": "tiny:flux_kontext", "arch": "flux_kontext"}}
    config = tmp_path / "edit.json"
    config.write_text(json.dumps({"job": "generate", "config": {"name": "edit", "process": [process]}}))
    assert run.main(["--dry-run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "edits: 2 x 1 reference images" in out and out.count("editing a.png") == 2 and out.count("editing b.png") == 2
    assert run.main([str(config)]) == 0
    made = sorted((tmp_path / "out").glob("*.png"))
    assert len(made) == 4 and len({path.read_bytes() for path in made}) == 4


def test_8bit_base_streamed_block_by_block_trains_alike(registry: Any) -> None:
    from toolkit.testing.memory_check import assert_streamed_8bit_trains_alike

    assert_streamed_8bit_trains_alike(registry, "flux", kept="proj_out", quantized="single_transformer_blocks.0.proj_out")


def test_kontext_trains_on_edit_pairs_through_run_py(tmp_path: Any, capsys: Any) -> None:
    """control_path pairs, cached with the targets, reach the transformer; previews edit ctrl_img; the dry run says so."""
    import json

    import run
    from toolkit.testing.demo import make

    make(tmp_path / "targets", 3)
    make(tmp_path / "before", 3, seed=5)
    (tmp_path / "targets" / "000_flower.png").rename(tmp_path / "targets" / "lonely.png")
    process = {"type": "sd_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu",
               "network": {"type": "lora", "linear": 4, "linear_alpha": 4},
               "save": {"dtype": "fp32", "save_every": 4},
               "datasets": [{"folder_path": str(tmp_path / "targets"), "control_path": str(tmp_path / "before"), "resolution": [64],
                             "cache_latents": True}],
               "train": {"batch_size": 1, "steps": 4, "lr": 1e-3, "dtype": "fp32", "cache_text_embeddings": True,
                         "timestep_type": "shift"},
               "model": {"name_or_path": "tiny:flux_kontext", "arch": "flux_kontext"},
               "sample": {"sample_every": 100, "width": 64, "height": 64, "sample_steps": 2,
                          "samples": [{"prompt": "make it warm", "ctrl_img": str(tmp_path / "before" / "001_house.png")}]}}
    config = tmp_path / "edit.json"
    config.write_text(json.dumps({"job": "extension", "config": {"name": "edit", "process": [process]}}))
    assert run.main(["--dry-run", str(config)]) == 0
    plan = capsys.readouterr().out
    assert f"references: 1 per image from {tmp_path / 'before'}, fitted to each target's bucket" in plan
    assert "2 images" in plan and f"no reference image in {tmp_path / 'before'} 1 (lonely.png)" in plan
    assert run.main([str(config)]) == 0
    run_dir = tmp_path / "out" / "edit"
    assert (run_dir / "edit.safetensors").is_file() and len(list((run_dir / "samples").glob("*.png"))) == 2


@pytest.mark.parametrize("kind", ["lokr", "dora"])
def test_lokr_and_dora_train_on_the_transformer(flux: FluxAdapter, kind: str) -> None:
    from toolkit.config.blocks import NetworkConfig
    from toolkit.network.network import Network

    network = Network.build(flux.components(), flux.lora_targets(False), NetworkConfig(type=kind, linear=4), name=kind)
    try:
        cond = flux.encode_prompts(["a cat"])
        latents = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(0))
        flux.predict(latents, torch.tensor([700.0]), cond).square().mean().backward()
        grads = [p.grad for p in network.parameters()]
        assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    finally:
        network.remove()
