"""A tiny fake architecture and data source for the trainer's tests.

``FakeAdapter`` implements the ModelAdapter contract with a small conv + attention denoiser whose layers
are named like real ones (``to_q/to_k/to_v/to_out.0``, 1x1 ``proj_in``, 3x3 ``conv``), a text encoder with
``q_proj/k_proj/v_proj/out_proj``, and a conv "VAE" (4x down). ``FakeData`` has the TrainData interface
and reads the images of the dataset folders. ``FAKE_EXTENSION`` registers both as architecture ``fake``
and process ``fake_trainer`` (the real trainer process, whose run hands the recipe the fake model loader and
data through its constructor), so a test config runs through run.py like a user's.

``model.model_kwargs`` steer the fake: ``schedule`` (flowmatch | ddpm), ``prediction`` (epsilon |
v_prediction), ``nan_at`` (the predict call from which it returns NaN), ``text_without_grad`` (encode
prompts without gradients, as a broken architecture would). The environment variable
``EASEL_FAKE_SIGNAL_AT=CALL:SIGNUM`` makes it send a signal to its own process at that predict call (so an
interrupted run and its resumption use the same config).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from toolkit.config.train import LoraTrainerConfig
from toolkit.models.base import GenerateRequest, ImageInfo, ModelAdapter, NoiseSchedule
from toolkit.registry import ArchRef, ArchSpec, Extension, LoraProfile, ProcessSpec
from jobs.train import LoraTrainerProcess
from toolkit.train.recipe import LoraTrainingRecipe

HIDDEN, TEXT_DIM, TOKENS = 16, 16, 8


class FakeAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int):
        super().__init__()
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim, dim)
        self.to_v = nn.Linear(context_dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        attended = F.scaled_dot_product_attention(self.to_q(x), self.to_k(context), self.to_v(context))
        return self.to_out[1](self.to_out[0](attended))


class FakeBlock(nn.Module):
    def __init__(self, dim: int, context_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(4, dim)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.attn = FakeAttention(dim, context_dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(self.norm(h))
        b, c, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(tokens, context)
        tokens = tokens + self.ff(tokens)
        x = tokens.transpose(1, 2).reshape(b, c, height, width)
        return h + self.conv(F.silu(x))


class FakeDenoiser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, HIDDEN, 3, padding=1)
        self.time_proj = nn.Linear(1, HIDDEN)
        self.blocks = nn.ModuleList([FakeBlock(HIDDEN, TEXT_DIM) for _ in range(2)])
        self.conv_out = nn.Conv2d(HIDDEN, 4, 3, padding=1)
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x) + self.time_proj(t.float().view(-1, 1).to(x.dtype) / 1000)[:, :, None, None]
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, context, use_reentrant=False)
            else:
                h = block(h, context)
        return self.conv_out(F.silu(h))


class FakeSelfAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(F.scaled_dot_product_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x)))


class FakeTextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, TEXT_DIM)
        self.self_attn = FakeSelfAttention(TEXT_DIM)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids)
        return hidden + self.self_attn(hidden)


class FakeVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 4, stride=4)
        self.decoder = nn.ConvTranspose2d(4, 3, 4, stride=4)


class FakeAdapter(ModelAdapter):
    """The fake architecture; deterministic weights (seed 0) whatever the global RNG."""

    @classmethod
    def load(cls, config: Any, arch: Any, *, device: torch.device, dtype: torch.dtype) -> "FakeAdapter":
        self = cls()
        self.config, self.arch, self.device, self.dtype = config, arch, torch.device(device), dtype
        self.options = dict(config.model_kwargs)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.denoiser = FakeDenoiser().to(self.device, dtype)
            self.text_encoders = {"text_encoder": FakeTextEncoder().to(self.device, dtype)}
            self.vae = FakeVAE().to(self.device, dtype)
        self.predict_calls = 0
        self.generated: list[GenerateRequest] = []
        return self

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        rows = [[b for b in p.encode()[:TOKENS]] + [0] * (TOKENS - len(p.encode()[:TOKENS])) for p in prompts]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.options.get("text_without_grad")):
            return {"prompt_embeds": self.text_encoders["text_encoder"](self.tokenize(prompts))}

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encoder(pixels.to(self.device, self.dtype)) * 0.5

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decoder(latents.to(self.dtype) / 0.5).clamp(-1, 1)

    def noise_schedule(self) -> NoiseSchedule:
        if self.options.get("schedule", "flowmatch") == "flowmatch":
            return NoiseSchedule("flowmatch", "flow", 1000, shift=3.0)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        return NoiseSchedule("ddpm", self.options.get("prediction", "epsilon"), 1000, alphas_cumprod=torch.cumprod(1 - betas, 0))

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor],
                image_info: list[ImageInfo] | None = None) -> torch.Tensor:
        self.predict_calls += 1
        call, _, signum = os.environ.get("EASEL_FAKE_SIGNAL_AT", "").partition(":")
        if call and self.predict_calls == int(call):
            os.kill(os.getpid(), int(signum))
        out = self.denoiser(noisy_latents.to(self.dtype), timesteps, cond["prompt_embeds"].to(self.dtype))
        if self.options.get("nan_at") and self.predict_calls >= self.options["nan_at"]:
            out = out * float("nan")
        return out

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        targets = {"transformer": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.0", "ff.2", "conv"]}
        if train_text_encoder:
            targets["text_encoder"] = ["q_proj", "k_proj", "v_proj", "out_proj"]
        return targets

    @torch.no_grad()
    def generate(self, requests: list[GenerateRequest]) -> list[Image.Image]:
        # real pipelines may draw from the global generators (e.g. a sampler without its own generator);
        # the fake does too, so the tests see whether previews disturb training's random numbers
        random.random(), np.random.rand(), torch.rand(1)
        images = []
        for request in requests:
            self.generated.append(request)
            generator = torch.Generator().manual_seed(request.seed)
            x = torch.randn(1, 4, request.height // 4, request.width // 4, generator=generator).to(self.device, self.dtype)
            cond = self.encode_prompts([request.prompt])
            sigmas = torch.linspace(1, 0, request.steps + 1)
            for sigma, following in zip(sigmas[:-1], sigmas[1:]):
                velocity = self.denoiser(x, (sigma * 1000).view(1).to(self.device), cond["prompt_embeds"])
                x = x + (following - sigma) * velocity
            pixels = self.decode_latents(x)[0].float().cpu()
            array = ((pixels.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()
            images.append(Image.fromarray(array))
        return images

    def pipeline(self) -> Any:
        return self


@dataclass
class FakePosition:
    epoch: int = 0
    index: int = 0


@dataclass
class FakeBatch:
    pixels: torch.Tensor | None
    latents: torch.Tensor | None
    captions: list[str]
    cond: dict[str, torch.Tensor] | None
    image_info: list[ImageInfo]
    paths: list[Path]
    reference_latents: list[torch.Tensor] | None = None
    reference_pixels: list[torch.Tensor] | None = None
    masks: torch.Tensor | None = None
    loss_weights: torch.Tensor | None = None
    network_weight: float = 1.0


class FakeData:
    """The TrainData interface over the images of the dataset folders (16x16, deterministic order and flips)."""

    size = 16

    def __init__(self, datasets: list[Any], *, trigger_word: str | None, batch_size: int, seed: int,
                 bucket_divisibility: int, rank: int = 0, world_size: int = 1, references: Any = None,
                 fallback_cache: Path | None = None, reg_weight: float = 1.0):
        self.paths = sorted(p for d in datasets for p in Path(d.folder_path).iterdir() if p.suffix == ".png")
        self.cache_latents = any(d.cache_latents or d.cache_latents_to_disk for d in datasets)
        self.flip = any(d.flip_x for d in datasets)
        self.captions = [f"{trigger_word or ''} {p.stem}".strip() for p in self.paths]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.pixels = torch.stack([self._read(p) for p in self.paths])
        self.latents: torch.Tensor | None = None
        self.cond: dict[str, torch.Tensor] | None = None

    def _read(self, path: Path) -> torch.Tensor:
        image = Image.open(path).convert("RGB").resize((self.size, self.size))
        return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1

    def report(self) -> list[str]:
        return [f"fake data: {len(self.paths)} images"]

    def dataset_captions(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for path in self.paths:
            found.setdefault(path.parent.name, []).append(path.with_suffix(".txt").read_text())
        return found

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.paths) / (self.batch_size * self.world_size)))

    def prepare(self, adapter: FakeAdapter, *, cache_text: bool = False,
                barrier: Callable[[], None] | None = None) -> None:
        with torch.no_grad():
            if self.cache_latents:
                self.latents = adapter.encode_images(self.pixels).float().cpu()
            if cache_text:
                self.cond = {k: v.cpu() for k, v in adapter.encode_prompts(self.captions).items()}

    def position(self, saved: Mapping[str, int] | None = None) -> FakePosition:
        return FakePosition(**(saved or {}))

    def batches(self, start: FakePosition) -> Iterator[tuple[FakeBatch, FakePosition]]:
        epoch, index, per = start.epoch, start.index, self.steps_per_epoch()
        while True:
            order = torch.randperm(len(self.paths), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch)).tolist()
            while index < per:
                first = (index * self.world_size + self.rank) * self.batch_size
                chosen = [order[(first + j) % len(order)] for j in range(self.batch_size)]
                index += 1
                yield self._batch(chosen, epoch, index), FakePosition(epoch, index) if index < per else FakePosition(epoch + 1, 0)
            epoch, index = epoch + 1, 0

    def _batch(self, chosen: list[int], epoch: int, index: int) -> FakeBatch:
        pixels = self.pixels[chosen]
        if self.flip:
            flips = torch.rand(len(chosen), generator=torch.Generator().manual_seed(hash((self.seed, epoch, index, self.rank)) % 2 ** 31)) < 0.5
            pixels = torch.where(flips.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
        info = [ImageInfo((self.size, self.size), (0, 0), (self.size, self.size)) for _ in chosen]
        return FakeBatch(
            pixels=None if self.latents is not None else pixels,
            latents=self.latents[chosen] if self.latents is not None else None,
            captions=[self.captions[i] for i in chosen],
            cond={k: v[chosen] for k, v in self.cond.items()} if self.cond is not None else None,
            image_info=info, paths=[self.paths[i] for i in chosen])


class FakeTrainerConfig(LoraTrainerConfig):
    """The trainer's config under the process type ``fake_trainer``."""

    type: Literal["fake_trainer"]  # type: ignore[assignment]


class FakeTrainerProcess(LoraTrainerProcess):
    """The real trainer process; its recipe gets the fake model and data."""

    def run(self) -> None:
        self.check_inputs()
        LoraTrainingRecipe(self.config, self.job.loaded, self.arch, load_model=FakeAdapter.load,
                           data=partial(self.read_data, FakeData)).run()


FAKE_SPEC = ArchSpec(
    name="fake", adapter="tests.train.fakes:FakeAdapter",
    variants={"base": {"sample_steps": 3, "guidance_scale": 1.0, "width": 32, "height": 32}},
    samplers=("euler",), default_sampler="euler", noise_schedulers=("flowmatch", "ddpm"), bucket_divisibility=4,
    default_lora_format="comfy", denoiser="transformer",
    lora=LoraProfile(comfy_prefixes={"transformer": "diffusion_model", "text_encoder": "text_encoders.fake"},
                     kohya_prefixes={"transformer": "lora_unet"}))
FAKE_ARCH = ArchRef(FAKE_SPEC, FAKE_SPEC.default_variant)

FAKE_EXTENSION = Extension(
    name="fake",
    description="test architecture and trainer",
    architectures=(FAKE_SPEC,),
    processes=(ProcessSpec("extension", "fake_trainer", "tests.train.fakes:FakeTrainerConfig",
                           "tests.train.fakes:FakeTrainerProcess"),),
)
