"""Image generation for evaluations, through the generate job's code (model adapters + LoRA stacks; img2img inputs
and ControlNets for the structure-kept comparison).

``generate_images`` is the only place the evaluate job touches a diffusion model. The base model is
loaded once (kept until ``release_models``); each call applies its LoRAs, generates, and removes
them again, so variants share one loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

    from toolkit.config.blocks import LoraRef, ModelConfig
    from toolkit.config.control import ControlNetConfig
    from toolkit.models.base import GenerateRequest
    from toolkit.registry import Registry

_LOADED: dict[str, Any] = {}
"""Loaded adapters by model config (JSON), so every variant reuses one base model."""


@dataclass(frozen=True)
class GenerationSettings:
    """Everything about generation that does not vary between variants."""

    registry: "Registry"
    device: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str
    negative_prompt: str = ""
    guidance_rescale: float = 0.0
    batch_size: int = 1


def _adapter(model_cfg: "ModelConfig", settings: GenerationSettings) -> Any:
    from toolkit.devices import generation_target
    from toolkit.models.loading import load_adapter

    key = model_cfg.model_dump_json()
    if key not in _LOADED:
        device, dtype = generation_target(settings.device, model_cfg.dtype)  # as the generate job
        _LOADED.clear()
        _LOADED[key] = load_adapter(model_cfg, settings.registry, device=device, dtype=dtype)
    return _LOADED[key]


def generate_images(model_cfg: "ModelConfig", loras: "list[LoraRef]", prompts: list[str], seeds: list[int],
                    settings: GenerationSettings, *, inputs: "list[Path] | None" = None, strength: float = 0.6,
                    controlnets: "list[ControlNetConfig] | None" = None) -> "list[Image.Image]":
    """One image per (prompt, input, seed), prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...] (inputs between prompts and
    seeds). ``inputs`` are img2img init images (at ``strength``), shaped as each at the settings' area; ControlNets
    without an image of their own read the input."""
    from toolkit.lora_io import apply_loras, remove_loras

    adapter = _adapter(model_cfg, settings)
    requests = [request for prompt in prompts for init in (inputs or [None])
                for request in _requests(adapter, prompt, init, seeds, settings, strength, controlnets or [])]
    if loras:
        apply_loras(adapter, [(lora.path, lora.weight) for lora in loras])
    try:
        images: list[Image.Image] = []
        for start in range(0, len(requests), settings.batch_size):
            images += adapter.generate(requests[start:start + settings.batch_size])
    finally:
        if loras:
            remove_loras(adapter)
    return images


def _requests(adapter: Any, prompt: str, init: "Path | None", seeds: list[int], settings: GenerationSettings,
              strength: float, controlnets: "list[ControlNetConfig]") -> "list[GenerateRequest]":
    """The requests of one prompt and input, one per seed."""
    from toolkit.control.inputs import controls_for
    from toolkit.data.images import displayed_size, load_image
    from toolkit.models.base import GenerateRequest
    from toolkit.sampling.lookup import fit_aspect

    spec = adapter.arch.spec
    size = (settings.width, settings.height)
    if init is not None:
        size = fit_aspect(displayed_size(init), size[0] * size[1], spec.bucket_divisibility)
    controls: tuple = ()
    if controlnets:
        images = [control.image or str(init) for control in controlnets]
        controls, size = controls_for(controlnets, images, size, spec, reference=init)
    init_image = load_image(init) if init is not None else None
    return [GenerateRequest(prompt=prompt, width=size[0], height=size[1], steps=settings.steps, seed=seed,
                            guidance_scale=settings.guidance_scale, sampler=settings.sampler,
                            negative_prompt=settings.negative_prompt, guidance_rescale=settings.guidance_rescale,
                            init_image=init_image, strength=strength, controls=controls) for seed in seeds]


def release_models() -> None:
    """Drop the loaded base model (and free its GPU memory)."""
    if not _LOADED:
        return
    _LOADED.clear()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
