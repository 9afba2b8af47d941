"""Z-Image adapter: the shared suite, diffusers' conventions, Turbo step counting, the training adapter."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from extensions.z_image.adapter import TRANSFORMER_TARGETS, ZImageAdapter
from toolkit.testing.adapter_suite import AdapterSuite
from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models.loading import load_adapter


class TestZImage(AdapterSuite):
    arch = "zimage:turbo"
    latent_channels = 16
    sampler = "flowmatch"
    schedule_kind = "flowmatch"
    single_file = True

    def test_prompt_encoding_matches_the_pipeline(self, adapter: ZImageAdapter) -> None:
        prompts = ["a photo of a cat", "a watercolor painting of a lake"]
        with torch.no_grad():
            cond = adapter.encode_prompts(prompts)
            reference = adapter.pipeline()._encode_prompt(list(prompts), device=adapter.device)
        assert cond["prompt_embeds"].shape[:2] == cond["prompt_mask"].shape == (2, 512)
        for row, mask, expected in zip(cond["prompt_embeds"], cond["prompt_mask"], reference):
            assert torch.allclose(row[mask], expected, atol=1e-6)
            assert not row[~mask].any()

    def test_predict_is_the_velocity_the_pipeline_steps_with(self, adapter: ZImageAdapter) -> None:
        """Euler steps x += (sigma_next - sigma) * predict(x, sigma * 1000) reproduce ZImagePipeline's latents."""
        steps, prompt = 4, "a red chair in a garden"
        noise = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected = adapter.pipeline()(prompt, height=48, width=64, num_inference_steps=steps, guidance_scale=0.0,
                                          latents=noise.clone(), output_type="latent").images
            scheduler = adapter.pipeline().scheduler
            sigmas = scheduler.sigmas.tolist()
            cond = adapter.encode_prompts([prompt])
            latents = noise.clone()
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
                velocity = adapter.predict(latents, torch.tensor([sigma * 1000.0]), cond)
                latents = latents + (sigma_next - sigma) * velocity.float()
        assert len(sigmas) == steps + 1 and sigmas[-1] == 0.0
        assert torch.allclose(latents, expected, atol=1e-4)

    def test_turbo_sample_steps_count_transformer_passes(self, adapter: ZImageAdapter, registry: Any) -> None:
        defaults = registry.arch("zimage:turbo").defaults
        assert (defaults["sample_steps"], defaults["guidance_scale"], defaults["flow_shift"]) == (8, 1.0, 3.0)
        calls: list[int] = []
        hook = adapter.denoiser.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
        try:
            adapter.generate([self.request(steps=defaults["sample_steps"], guidance_scale=defaults["guidance_scale"])])
            assert calls == [1] * 8
            calls.clear()
            adapter.generate([self.request(steps=8, guidance_scale=4.0, negative_prompt="blurry")])
            assert calls == [2] * 8
        finally:
            hook.remove()

    def test_variant_names_pick_their_defaults(self, registry: Any) -> None:
        turbo, base, deturbo = (registry.arch(name) for name in ("zimage:turbo", "zimage", "zimage:deturbo"))
        assert (turbo.name, base.name, deturbo.name) == ("zimage:turbo", "zimage", "zimage:deturbo")
        assert registry.arch("zimage:base").name == "zimage" and registry.arch("ZImage:Turbo").variant == "turbo"
        for variant in (base, deturbo):
            assert variant.defaults["sample_steps"] > turbo.defaults["sample_steps"]
            assert variant.defaults["guidance_scale"] > 1.0, "undistilled models sample with CFG"
        with pytest.raises(EaselError, match="unknown architecture 'zimage:turbbo'.*zimage:deturbo"):
            registry.arch("zimage:turbbo")

    def test_guidance_is_the_usual_cfg_scale(self, adapter: ZImageAdapter) -> None:
        assert [adapter.pipeline_guidance(g) for g in (0.0, 1.0, 4.0)] == [0.0, 0.0, 3.0]

    def test_flow_shift_reaches_schedule_and_sampler(self, registry: Any) -> None:
        config = ModelConfig(name_or_path="tiny:zimage", arch="zimage", model_kwargs={"flow_shift": 1.5})
        adapter = load_adapter(config, registry, device="cpu")
        assert adapter.noise_schedule().shift == 1.5 and adapter.scheduler_overrides() == {"shift": 1.5}

    @pytest.mark.parametrize("base_is_folder", [False, True])
    def test_single_file_keeps_to_the_cache_when_the_hub_cannot_be_reached(
            self, registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_is_folder: bool) -> None:
        """HF_HUB_OFFLINE unset but the connection probe failed: the transformer's config (a hub id) comes from the hub
        cache only, as for every other loader (it used to look at HF_HUB_OFFLINE alone and try the network)."""
        import diffusers
        from huggingface_hub import constants

        from toolkit.models import hub
        from toolkit.models.loading import ModelSource

        class Stop(Exception):
            pass

        seen: dict[str, Any] = {}

        def from_single_file(*args: Any, **kwargs: Any) -> None:
            seen.update(kwargs)
            raise Stop

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hub, "_unreachable", lambda: "huggingface.co:443 cannot be reached (test)")
        monkeypatch.setattr(diffusers.ZImageTransformer2DModel, "from_single_file", from_single_file)
        base = str(tmp_path) if base_is_folder else "Tongyi-MAI/Z-Image-Turbo"
        source = ModelSource("file", str(tmp_path / "z_image_turbo.safetensors"), config=base)
        arch = registry.arch("zimage:turbo")
        with pytest.raises(Stop):
            ZImageAdapter.load_pipeline(source, ModelConfig(name_or_path=source.path, arch=arch.name), arch, torch.float32, {})
        assert seen["config"] == base and seen["local_files_only"] is not base_is_folder


def _assistant_file(adapter: ZImageAdapter, path: Path, rank: int = 2) -> Path:
    """A LoRA in the layout of ostris' Z-Image Turbo training adapter (``diffusion_model.*.lora_A/B``)."""
    generator = torch.Generator().manual_seed(9)
    state = {}
    for name, module in adapter.denoiser.named_modules():
        if name.startswith("layers.") and any(name.endswith(t) for t in TRANSFORMER_TARGETS):
            state[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
            state[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def base(registry: Any) -> ZImageAdapter:
    return load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), registry, device="cpu")


@pytest.fixture(scope="module")
def assisted(base: ZImageAdapter, registry: Any, tmp_path_factory: Any) -> ZImageAdapter:
    path = _assistant_file(base, tmp_path_factory.mktemp("assistant") / "zimage_turbo_training_adapter.safetensors")
    config = ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo", assistant_lora_path=str(path))
    return load_adapter(config, registry, device="cpu")


class TestAssistantAdapter:
    def test_merged_into_the_weights(self, base: ZImageAdapter, assisted: ZImageAdapter, tmp_path: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(_assistant_file(base, tmp_path / "again.safetensors"))
        down, up = state["diffusion_model.layers.0.attention.to_k.lora_A.weight"], state["diffusion_model.layers.0.attention.to_k.lora_B.weight"]
        merged = assisted.denoiser.layers[0].attention.to_k.weight
        assert torch.allclose(merged, base.denoiser.layers[0].attention.to_k.weight + up @ down, atol=1e-6)
        untouched = "noise_refiner.0.attention.to_k.weight"
        assert torch.equal(assisted.denoiser.state_dict()[untouched], base.denoiser.state_dict()[untouched])

    def test_switched_off_for_samples(self, base: ZImageAdapter, assisted: ZImageAdapter) -> None:
        latents = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([600.0])
        with torch.no_grad():
            cond = base.encode_prompts(["a cat"])
            plain = base.predict(latents, t, cond)
            trained = assisted.predict(latents, t, cond)
            assert assisted.assistant_active and not torch.allclose(plain, trained, atol=1e-3)
            with assisted.assistant_off():
                assert not assisted.assistant_active
                assert torch.allclose(assisted.predict(latents, t, cond), plain, atol=1e-5)
            assert assisted.assistant_active and torch.equal(assisted.predict(latents, t, cond), trained)
        request = AdapterSuite.request(TestZImage(), steps=2)
        sample, reference = assisted.generate([request])[0], base.generate([request])[0]
        assert np.abs(np.asarray(sample, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1
        assert assisted.assistant_active

    def test_missing_hub_file_offline(self, registry: Any) -> None:
        config = ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo",
                             assistant_lora_path="easel-test/no_such_adapter/adapter.safetensors")
        with pytest.raises(EaselError, match="HF_HUB_OFFLINE"):
            load_adapter(config, registry, device="cpu")

    def test_refused_by_other_architectures(self, registry: Any, tmp_path: Path) -> None:
        config = ModelConfig(name_or_path="tiny:sd15", arch="sd15", assistant_lora_path=str(tmp_path / "a.safetensors"))
        with pytest.raises(EaselError, match="Z-Image"):
            load_adapter(config, registry, device="cpu")

    @pytest.mark.parametrize("kind", ["lora", "lokr"])
    def test_previews_show_turbo_plus_the_user_adapter(self, base: ZImageAdapter, assisted: ZImageAdapter, kind: str) -> None:
        """Training sees base + assistant + user adapter; samples see base + user adapter (the assistant at -1)."""
        from toolkit.config.blocks import NetworkConfig
        from toolkit.network.network import Network

        config = NetworkConfig(type=kind, linear=4, linear_alpha=4)
        generator = torch.Generator().manual_seed(3)
        networks = [Network.build(model.components(), model.lora_targets(False), config, name="user") for model in (base, assisted)]
        try:
            weights = {key: value + 0.3 * torch.randn(value.shape, generator=generator)
                       for key, value in networks[0].state_dict().items()}
            for network in networks:
                network.load_state_dict(weights)
            latents = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(2))
            t = torch.tensor([600.0])
            with torch.no_grad():
                cond = base.encode_prompts(["a cat"])
                user_only = base.predict(latents, t, cond)
                networks[0].disable()
                plain = base.predict(latents, t, cond)
                networks[0].enable()
                trained = assisted.predict(latents, t, cond)
                with assisted.assistant_off():
                    previewed = assisted.predict(latents, t, cond)
            assert not torch.allclose(user_only, plain, atol=1e-3), "the user adapter changes the output"
            assert not torch.allclose(trained, user_only, atol=1e-3), "training sees the assistant"
            assert torch.allclose(previewed, user_only, atol=1e-4)
            request = AdapterSuite.request(TestZImage(), steps=2)
            sample, reference = assisted.generate([request])[0], base.generate([request])[0]
            assert np.abs(np.asarray(sample, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1
        finally:
            for network in networks:
                network.remove()
