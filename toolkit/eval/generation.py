"""Image generation for evaluations, through the generate job's code (model adapters + LoRA stacks).

``generate_images`` is the only place the evaluate job touches a diffusion model. The base model is
loaded once (kept until ``release_models``); each call applies its LoRAs, generates, and removes
them again, so variants share one loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from toolkit.config.blocks import ModelConfig
    from toolkit.config.blocks import LoraRef
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
                    settings: GenerationSettings) -> "list[Image.Image]":
    """One image per (prompt, seed), prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
    from toolkit.models.base import GenerateRequest
    from toolkit.lora_io import apply_loras, remove_loras

    adapter = _adapter(model_cfg, settings)
    requests = [GenerateRequest(prompt=prompt, width=settings.width, height=settings.height, steps=settings.steps,
                                guidance_scale=settings.guidance_scale, seed=seed, sampler=settings.sampler,
                                negative_prompt=settings.negative_prompt, guidance_rescale=settings.guidance_rescale)
                for prompt in prompts for seed in seeds]
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


def release_models() -> None:
    """Drop the loaded base model (and free its GPU memory)."""
    if not _LOADED:
        return
    _LOADED.clear()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
