"""The shared test suite every architecture's adapter passes (pytest; shipped so extensions can use it).

An architecture's folder gets it by subclassing ``AdapterSuite`` in its own test module
(``extensions/<arch>/test_<arch>.py``) with the expectations its tiny model must meet; the suite loads
``tiny:<arch>`` once per class (the ``adapter`` fixture) and reads the rest from the ArchSpec::

    class TestMyArch(AdapterSuite):
        arch = "myarch"
        latent_channels = 16
        sampler = "flowmatch"
        schedule_kind = "flowmatch"
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models import vae_tiling
from toolkit.models.base import GenerateRequest, ModelAdapter
from toolkit.models.loading import load_adapter, resolve_source
from toolkit.models.pipeline_adapter import pil_to_pixels, pixels_to_pil
from toolkit.models.tiny import cache_dir


@contextmanager
def _largest_map(module: torch.nn.Module) -> Iterator[list[int]]:
    """The pixel counts (H x W) of every convolution's output inside ``module`` while the block runs."""
    sizes = [0]

    def record(_: torch.nn.Module, __: Any, output: Any) -> None:
        sizes.append(output.shape[-2] * output.shape[-1])

    convolutions = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    hooks = [conv.register_forward_hook(record) for conv in convolutions]
    try:
        yield sizes
    finally:
        for hook in hooks:
            hook.remove()


def _pixels(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A (1, 3, H, W) test picture in [-1, 1]: horizontal ramp, vertical ramp, noise."""
    generator = torch.Generator().manual_seed(seed)
    across = torch.linspace(-1, 1, width).expand(height, width)
    down = torch.linspace(-1, 1, height)[:, None].expand(height, width)
    return torch.stack([across, down, torch.rand(height, width, generator=generator) - 0.5])[None]


class AdapterSuite:
    """Load, encode, predict, schedule, txt2img, img2img and determinism checks on the tiny model."""

    arch: ClassVar[str]
    """Architecture name as written in configs (may carry a variant)."""
    latent_channels: ClassVar[int]
    sampler: ClassVar[str]
    """The sampler used for generation tests."""
    size: ClassVar[tuple[int, int]] = (64, 48)
    """(width, height) for generation: not square, so a swapped width and height shows."""
    schedule_kind: ClassVar[str] = "ddpm"
    single_file: ClassVar[bool] = False
    """Whether the tiny model comes with a single-file checkpoint (``ArchSpec.tiny.single_file``) to load."""
    trains_text_encoder: ClassVar[bool] = True
    """Whether the architecture offers LoRA targets in its text encoders (else ``lora_targets(True)`` must refuse)."""

    @pytest.fixture(scope="class")
    @classmethod
    def adapter(cls, registry: Any) -> ModelAdapter:
        """``tiny:<arch>`` for the class's ``arch`` (variant included), on the CPU, loaded once per class."""
        return load_adapter(ModelConfig(name_or_path=f"tiny:{cls.arch.partition(':')[0]}", arch=cls.arch), registry, device="cpu")

    def request(self, **overrides: Any) -> GenerateRequest:
        settings: dict[str, Any] = dict(prompt="a photo of a cat on a red chair", width=self.size[0], height=self.size[1],
                                        steps=2, guidance_scale=1.0, seed=7, sampler=self.sampler)
        return GenerateRequest(**(settings | overrides))

    def test_load_from_folder(self, adapter: ModelAdapter, registry: Any) -> None:
        assert adapter.arch.spec.name == registry.arch(self.arch).spec.name
        folder = cache_dir("tiny") / adapter.arch.spec.name
        again = load_adapter(ModelConfig(name_or_path=str(folder), arch=self.arch), registry, device="cpu")
        expected = adapter.denoiser.state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in again.denoiser.state_dict().items())
        components = adapter.components()
        assert components[adapter.denoiser_name] is adapter.denoiser
        assert set(adapter.text_encoders) <= set(components)
        for module in [*components.values(), adapter.vae]:
            assert not module.training
            assert not any(p.requires_grad for p in module.parameters())
            assert next(module.parameters()).device.type == "cpu"

    def test_the_specs_facts_are_the_loaded_models(self, adapter: ModelAdapter) -> None:
        """What the ArchSpec declares for the other parts (denoiser name, pipeline class, noise schedules) is what
        the adapter loads: the adapter reads them from there, and nothing else declares them again."""
        spec, pipe = adapter.arch.spec, adapter.pipeline()
        assert adapter.denoiser_name == spec.denoiser and getattr(pipe, spec.denoiser) is adapter.denoiser
        assert type(pipe).__name__ == spec.pipeline
        assert (adapter.noise_schedule().kind == "flowmatch") == ("flowmatch" in spec.noise_schedulers)
        assert spec.default_sampler in spec.samplers and spec.tiny is not None

    def test_tiny_model_is_cached_and_rebuilt_identically(self, adapter: ModelAdapter, registry: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """Asked again, the shared cache is read, not rebuilt; built again in a fresh cache (never by deleting the
        shared one, which other test processes may be loading), the files are the same bytes."""
        folder = cache_dir("tiny") / adapter.arch.spec.name
        weights = sorted(folder.rglob("*.safetensors"))
        assert (folder / "model_index.json").is_file() and weights
        before = {p: p.stat().st_mtime_ns for p in weights}
        source = resolve_source(adapter.config, adapter.arch)
        assert Path(source.path) == folder and {p: p.stat().st_mtime_ns for p in weights} == before
        monkeypatch.setenv("EASEL_CACHE_DIR", str(tmp_path))
        rebuilt = Path(resolve_source(adapter.config, adapter.arch).path)
        assert rebuilt == tmp_path / ".tiny" / adapter.arch.spec.name
        assert sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*.safetensors")) == [p.relative_to(folder) for p in weights]
        assert all((rebuilt / p.relative_to(folder)).read_bytes() == p.read_bytes() for p in weights)

    def test_load_from_single_file(self, adapter: ModelAdapter, registry: Any) -> None:
        tiny = adapter.arch.spec.tiny
        assert tiny is not None and bool(tiny.single_file) == self.single_file
        if not self.single_file:
            pytest.skip("no single-file checkpoint for this architecture")
        folder = cache_dir("tiny") / adapter.arch.spec.name
        config = ModelConfig(name_or_path=str(folder / tiny.single_file), arch=self.arch, model_kwargs={"config": str(folder)})
        loaded = load_adapter(config, registry, device="cpu")
        assert tiny.single_file_components
        for name in tiny.single_file_components:
            expected = getattr(adapter.pipeline(), name).state_dict()
            got = getattr(loaded.pipeline(), name).state_dict()
            assert set(got) == set(expected), name
            assert all(torch.equal(got[k], expected[k]) for k in expected), name

    def test_pickle_checkpoint_refused_unless_allowed(self, adapter: ModelAdapter, registry: Any, tmp_path: Path) -> None:
        checkpoint = tmp_path / "model.ckpt"
        torch.save({"state_dict": {"w": torch.zeros(2)}}, checkpoint)
        with pytest.raises(EaselError, match="allow_pickle"):
            load_adapter(ModelConfig(name_or_path=str(checkpoint), arch=self.arch), registry, device="cpu")

    def test_encode_prompts_rows_are_independent(self, adapter: ModelAdapter) -> None:
        prompts = ["a photo of a cat", "a watercolor painting of a mountain lake at sunset"]
        with torch.no_grad():
            both = adapter.encode_prompts(prompts)
            second = adapter.encode_prompts(prompts[1:])
        for name, tensor in both.items():
            assert tensor.shape[0] == 2 and tensor.device.type == "cpu", name
            assert torch.allclose(tensor[1:].float(), second[name].float(), atol=1e-5), name
        assert not torch.allclose(both["prompt_embeds"][0], both["prompt_embeds"][1])

    def test_encode_decode_round_trip(self, adapter: ModelAdapter) -> None:
        width, height = self.size
        pixels = _pixels(width, height)
        with torch.no_grad():
            latents = adapter.encode_images(pixels)
            decoded = adapter.decode_latents(latents)
            vae = adapter.vae
            raw = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        assert latents.shape == (1, self.latent_channels, height // factor, width // factor)
        assert decoded.shape == pixels.shape and decoded.min() >= -1 and decoded.max() <= 1
        assert torch.allclose(decoded, raw, atol=1e-5)

    def test_vae_tiling(self, adapter: ModelAdapter) -> None:
        """``model.vae_tiling``: no map the VAE makes is larger than one tile, the image stays close to the one
        decoded whole, and an image that fits in one tile comes out exactly as without tiling."""
        tile = 32
        pixels = _pixels(4 * tile, 3 * tile)
        with torch.no_grad():
            latents = adapter.encode_images(pixels)
            whole = adapter.decode_latents(latents)
            small = adapter.decode_latents(latents[..., :tile // 8, :tile // 8])
            vae_tiling.enable(adapter.vae, tile)
            try:
                with _largest_map(adapter.vae.encoder) as encoded_maps:
                    tiled_latents = adapter.encode_images(pixels)
                with _largest_map(adapter.vae.decoder) as decoded_maps:
                    tiled = adapter.decode_latents(latents)
                small_tiled = adapter.decode_latents(latents[..., :tile // 8, :tile // 8])
            finally:
                adapter.vae.use_tiling = False
        assert max(encoded_maps) <= tile * tile and max(decoded_maps) <= tile * tile
        assert tiled_latents.shape == latents.shape and tiled.shape == whole.shape
        assert (tiled - whole).abs().mean() < 0.3 * whole.std()
        assert torch.equal(small_tiled, small)

    def test_encoder_memo(self, adapter: ModelAdapter) -> None:
        """The text encoders' outputs kept by their inputs (previews, the generate job): a prompt seen before makes the
        same image, bit for bit, without running an encoder; another prompt runs them again."""
        from toolkit.models.encoder_memo import EncoderMemo

        memo = EncoderMemo(adapter, parked=[])
        request = self.request(negative_prompt="blurry", guidance_scale=3.0)
        with torch.no_grad():
            plain = adapter.generate([request])[0].tobytes()
            with memo.round():
                first = adapter.generate([request])[0].tobytes()
            misses = memo.misses
            with memo.round():
                again = adapter.generate([request])[0].tobytes()
            assert misses > 0 and memo.misses == misses and memo.hits == misses
            with memo.round():
                adapter.generate([self.request(prompt="a lighthouse at dusk")])
        assert plain == first == again and memo.misses > misses

    def test_predict_shape_and_dependence(self, adapter: ModelAdapter) -> None:
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(2, self.latent_channels, self.size[1] // 8, self.size[0] // 8, generator=generator)
        with torch.no_grad():
            cond = adapter.encode_prompts(["a cat", "a dog"])
            early = adapter.predict(latents, torch.tensor([900.0, 900.0]), cond)
            late = adapter.predict(latents, torch.tensor([100.0, 100.0]), cond)
            other = adapter.predict(latents, torch.tensor([900.0, 900.0]), adapter.encode_prompts(["a red house", "a blue car"]))
        assert early.shape == latents.shape and torch.isfinite(early).all()
        assert not torch.allclose(early, late) and not torch.allclose(early, other)

    def test_compiled_blocks_predict_as_eager_without_recompiling(self, registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """``train.compile`` here: the compile units, traced by Dynamo (its ``eager`` backend: no code generation),
        predict what the plain blocks do, and other timesteps reuse their graphs (the trainer compiles the floats
        inside the blocks in as constants; one that changed per call would compile again each time). Prompts of another
        form (Qwen-Image's padding mask) may add a graph once."""
        import torch._dynamo

        from toolkit.models import memory

        adapter = load_adapter(ModelConfig(name_or_path=f"tiny:{self.arch.partition(':')[0]}", arch=self.arch), registry,
                               device="cpu")  # its own copy: compiling cannot be undone
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(2, self.latent_channels, self.size[1] // 8, self.size[0] // 8, generator=generator)
        with torch.no_grad():
            same, mixed = adapter.encode_prompts(["a cat", "a dog"]), adapter.encode_prompts(["a red house", "a car"])
            calls = [(torch.tensor([t, t]), cond) for t, cond in ((900.0, same), (500.0, mixed), (100.0, same), (300.0, mixed))]
            expected = [adapter.predict(latents, t, cond) for t, cond in calls]
        monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")
        torch._dynamo.reset()
        stats = torch._dynamo.utils.counters["stats"]
        try:
            assert memory.compile_blocks(adapter.compile_units(), constant_floats=True) > 0  # as the trainer does
            with torch.no_grad():
                start = stats["unique_graphs"]
                got = [adapter.predict(latents, t, cond) for t, cond in calls[:2]]
                traced = stats["unique_graphs"]
                got += [adapter.predict(latents, t, cond) for t, cond in calls[2:]]  # other timesteps, the same prompts
        finally:
            torch._dynamo.reset()
        assert traced > start and stats["unique_graphs"] == traced
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected))

    def test_noise_schedule(self, adapter: ModelAdapter) -> None:
        schedule = adapter.noise_schedule()
        assert schedule.kind == self.schedule_kind and schedule.num_train_timesteps == 1000
        if schedule.kind == "ddpm":
            alphas = schedule.alphas_cumprod
            assert alphas is not None and alphas.shape == (1000,)
            assert (alphas > 0).all() and (alphas < 1).all() and (alphas[1:] < alphas[:-1]).all()
            assert schedule.prediction_type in ("epsilon", "v_prediction")
        else:
            assert schedule.prediction_type == "flow" and schedule.shift > 0

    def test_lora_targets_exist(self, adapter: ModelAdapter) -> None:
        if not self.trains_text_encoder:
            with pytest.raises(EaselError, match="train_text_encoder"):
                adapter.lora_targets(True)
        for train_text_encoder in (False, True) if self.trains_text_encoder else (False,):
            targets = adapter.lora_targets(train_text_encoder)
            assert adapter.denoiser_name in targets and (len(targets) > 1) == train_text_encoder
            for component, suffixes in targets.items():
                names = [name for name, _ in adapter.components()[component].named_modules()]
                for suffix in suffixes:
                    assert any(n == suffix or n.endswith("." + suffix) for n in names), (component, suffix)

    def test_every_default_target_gets_a_gradient(self, adapter: ModelAdapter) -> None:
        """A LoRA on the default targets: every layer's B gets a gradient from one loss (data-parallel training
        refuses parameters that take no part in the loss)."""
        from toolkit.config.blocks import NetworkConfig
        from toolkit.network.network import Network

        network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=2, linear_alpha=2),
                                name="suite_gradients")
        try:
            generator = torch.Generator().manual_seed(0)
            # Twice the suite's size: at 48x64 a tiny UNet's mid block sees one token, where self-attention's
            # query and key get an exactly-zero gradient (softmax over one key is 1) plus rounding noise.
            latents = torch.randn(1, self.latent_channels, self.size[1] // 4, self.size[0] // 4, generator=generator)
            with torch.no_grad():
                cond = adapter.encode_prompts(["a cat"])
            adapter.predict(latents, torch.tensor([500.0]), cond).square().mean().backward()
            ups = {name: p.grad for name, p in network.named_parameters() if "lora_B" in name}
            # A real gradient, not rounding noise: well above float32 epsilon times the largest one.
            largest = max((grad.abs().max().item() for grad in ups.values() if grad is not None), default=0.0)
            starved = [name for name, grad in ups.items() if grad is None or not grad.abs().max() > largest * 1e-5]
            assert ups and starved == [], f"{len(starved)} of {len(ups)} layers got no gradient: {starved[:8]}"
        finally:
            network.remove()

    def test_txt2img_size_and_determinism(self, adapter: ModelAdapter) -> None:
        first = adapter.generate([self.request(), self.request(seed=8)])
        again = adapter.generate([self.request(), self.request(seed=8)])
        single = adapter.generate([self.request()])
        assert [image.size for image in first] == [self.size, self.size]
        assert [image.tobytes() for image in first] == [image.tobytes() for image in again]
        assert first[0].tobytes() != first[1].tobytes()
        batched_vs_single = np.abs(np.asarray(first[0], dtype=int) - np.asarray(single[0], dtype=int))
        assert batched_vs_single.mean() < 1.0, "a batch must not change an image beyond float rounding"

    def test_guidance_and_negative_prompt(self, adapter: ModelAdapter) -> None:
        plain = adapter.generate([self.request()])[0]
        guided = adapter.generate([self.request(guidance_scale=5.0, negative_prompt="blurry")])[0]
        other_negative = adapter.generate([self.request(guidance_scale=5.0, negative_prompt="a dog")])[0]
        assert plain.tobytes() != guided.tobytes() and guided.tobytes() != other_negative.tobytes()
        unguided_negative = adapter.generate([self.request(negative_prompt="a dog")])[0]
        assert unguided_negative.tobytes() == plain.tobytes()

    def test_every_sampler_runs_and_foreign_ones_are_refused(self, adapter: ModelAdapter) -> None:
        for sampler in adapter.arch.spec.samplers:
            (image,) = adapter.generate([self.request(sampler=sampler)])
            assert image.size == self.size
        foreign = "flowmatch" if "flowmatch" not in adapter.arch.spec.samplers else "euler_a"
        with pytest.raises(EaselError, match="does not fit"):
            adapter.generate([self.request(sampler=foreign)])

    def test_img2img(self, adapter: ModelAdapter) -> None:
        source = pixels_to_pil(_pixels(*self.size, seed=3))[0]
        made = adapter.generate([self.request(init_image=source, strength=0.5, steps=4)])[0]
        again = adapter.generate([self.request(init_image=source, strength=0.5, steps=4)])[0]
        txt2img = adapter.generate([self.request(steps=4)])[0]
        assert made.size == self.size and made.tobytes() == again.tobytes() and made.tobytes() != txt2img.tobytes()

    def test_img2img_strength_zero_returns_the_input(self, adapter: ModelAdapter) -> None:
        source = pixels_to_pil(_pixels(*self.size, seed=4))[0]
        (kept,) = adapter.generate([self.request(init_image=source, strength=0.0)])
        with torch.no_grad():
            round_trip = pixels_to_pil(adapter.decode_latents(adapter.encode_images(pil_to_pixels([source]))))[0]
        assert kept.size == source.size
        assert np.abs(np.asarray(kept, dtype=int) - np.asarray(round_trip, dtype=int)).max() <= 1
        weak = adapter.generate([self.request(init_image=source, strength=0.3, steps=4)])[0]
        assert np.abs(np.asarray(weak, dtype=int) - np.asarray(kept, dtype=int)).mean() > 0

    def test_img2img_weak_strength_runs_one_step(self, adapter: ModelAdapter) -> None:
        """A strength below 1/steps still denoises once (diffusers' SD pipelines would run no step and fail)."""
        source = pixels_to_pil(_pixels(*self.size, seed=5))[0]
        calls: list[int] = []
        hook = adapter.denoiser.register_forward_hook(lambda module, args, out: calls.append(1))
        try:
            weak = adapter.generate([self.request(init_image=source, strength=0.05, steps=4)])[0]
        finally:
            hook.remove()
        one_step = adapter.generate([self.request(init_image=source, strength=0.25, steps=4)])[0]
        kept = adapter.generate([self.request(init_image=source, strength=0.0, steps=4)])[0]
        assert calls == [1] and weak.tobytes() == one_step.tobytes() != kept.tobytes()

    def test_global_random_state_does_not_matter(self, adapter: ModelAdapter) -> None:
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
        first = adapter.generate([self.request(seed=11)])[0]
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
        assert adapter.generate([self.request(seed=11)])[0].tobytes() == first.tobytes()
