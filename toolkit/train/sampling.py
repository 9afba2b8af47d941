"""Preview images during training, made by ``adapter.generate`` with the trained network active.

Previews never disturb training: the global random generators are saved and restored around them (the
trainer's noise has its own generator anyway), modules are put in eval mode and back, the EMA weights
(if any) are swapped in and out, and the network's multiplier is set per preview and restored.
Files: ``samples/<step:09d>_<i:02d>.<format>``.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.models.base import GenerateRequest
from toolkit.train.state import preserved_rng

if TYPE_CHECKING:
    from PIL import Image

    from toolkit.config.blocks import SampleConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network
    from toolkit.registry import ArchRef
    from toolkit.train.ema import EMA


@dataclass(frozen=True)
class Preview:
    """One preview: what to generate and at which network weight."""

    request: GenerateRequest
    multiplier: float


def preview_requests(sample: "SampleConfig", arch: "ArchRef") -> list[Preview]:
    """The previews of a ``sample:`` block, defaults from the architecture variant.

    This is the one place where a preview prompt becomes a request: ``[trigger]`` is already replaced by
    the config loader, and inline prompt flags (--n, --w, --h, --seed, ...) are parsed here.
    """
    defaults = arch.defaults
    sampler = sample.sampler or arch.spec.default_sampler
    previews = []
    for index, item in enumerate(sample.all_prompts()):
        seed = item.seed if item.seed is not None else sample.seed + (index if sample.walk_seed else 0)
        guidance = next(v for v in (item.guidance_scale, sample.guidance_scale, defaults.get("guidance_scale"), 1.0) if v is not None)
        request = GenerateRequest(
            prompt=item.prompt, width=item.width or sample.width, height=item.height or sample.height,
            steps=item.sample_steps or sample.sample_steps or int(defaults.get("sample_steps", 20)),
            guidance_scale=float(guidance), seed=seed, sampler=sampler,
            negative_prompt=item.neg if item.neg is not None else sample.neg, guidance_rescale=sample.guidance_rescale)
        multiplier = item.network_multiplier if item.network_multiplier is not None else sample.network_multiplier
        previews.append(Preview(request, multiplier))
    return previews


def save_previews(images: "list[Image.Image]", folder: Path, step: int, image_format: str) -> list[Path]:
    """Write one step's previews; the per-step grid of them is made here too."""
    from toolkit.output import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    suffix = "jpg" if image_format == "jpeg" else image_format
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{step:09d}_{index:02d}.{suffix}"
        with atomic_path(path) as temp:
            image.save(temp, format="JPEG" if suffix == "jpg" else suffix.upper())
        paths.append(path)
    return paths


def make_previews(adapter: "ModelAdapter", network: "Network", ema: "EMA | None", previews: list[Preview],
                  offloaded: list[str]) -> "list[Image.Image]":
    """Generate the previews with the network (EMA weights if any) at each preview's multiplier.

    ``offloaded`` names components moved off the device during training (brought back meanwhile).
    """
    import torch

    modules = [adapter.denoiser, *adapter.text_encoders.values()]
    modes = [module.training for module in modules]
    images = []
    with ExitStack() as stack:
        stack.enter_context(preserved_rng())
        stack.enter_context(torch.no_grad())
        stack.enter_context(ema.swapped() if ema is not None else nullcontext())
        if offloaded:
            adapter.move(offloaded, adapter.device)
        for module in modules:
            module.eval()
        try:
            for preview in previews:
                with network.scaled(preview.multiplier):
                    images.extend(adapter.generate([preview.request]))
        finally:
            for module, mode in zip(modules, modes):
                module.train(mode)
            if offloaded:
                adapter.move(offloaded, "cpu")
    return images
