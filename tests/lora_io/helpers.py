"""Random LoRAs in easel's canonical layout for the tiny models, image comparison, and ``load_lora`` /
``save_lora`` with the real registry passed (architectures given by name, guesses over every registered one)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from tests.conftest import ROOT
from toolkit.lora_io import files
from toolkit.lora_io.model import base_layer
from toolkit.models.base import GenerateRequest
from toolkit.registry import Registry

REGISTRY = Registry.discover(("jobs",), ROOT / "extensions")
load_lora = partial(files.load_lora, registry=REGISTRY)
save_lora = partial(files.save_lora, registry=REGISTRY)


def target_names(module: torch.nn.Module, suffixes: list[str]) -> list[str]:
    """Linear and Conv2d layers (PEFT-wrapped ones too) whose name is, or ends with, one of ``suffixes``."""
    return [name for name, layer in module.named_modules()
            if isinstance(base_layer(layer), (torch.nn.Linear, torch.nn.Conv2d)) and ".base_layer" not in name
            and ".lora_" not in name and any(name == s or name.endswith("." + s) for s in suffixes)]


def _lycoris_tensors(layer: torch.nn.Module, kind: str, rank: int, alpha: float, generator: torch.Generator,
                     scale: float) -> dict[str, torch.Tensor]:
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    module_class = LohaModule if kind == "loha" else LokrModule
    extra = {"decompose_both": False, "factor": 4} if kind == "lokr" else {}
    lyco = module_class("x", layer, 1.0, rank, alpha, **extra)
    out = {}
    for name in lyco.weight_list:
        value = getattr(lyco, name, None)
        if isinstance(value, torch.Tensor) and name not in ("alpha", "dora_scale"):
            out[name] = torch.randn(value.shape, generator=generator) * scale
    out["alpha"] = torch.tensor(float(alpha))
    return out


def random_lora(components: dict[str, torch.nn.Module], targets: dict[str, list[str]], *, kind: str = "lora",
                rank: int = 4, alpha: float | None = None, seed: int = 0, scale: float = 0.3,
                dora: bool = False) -> dict[str, torch.Tensor]:
    """A canonical state dict with random nonzero weights for ``targets`` ({component: name suffixes})."""
    generator = torch.Generator().manual_seed(seed)
    alpha = float(rank) / 2 if alpha is None else alpha
    state: dict[str, torch.Tensor] = {}
    for component, suffixes in targets.items():
        root = components[component]
        for name in target_names(root, suffixes):
            layer = base_layer(root.get_submodule(name))
            prefix = f"{component}.{name}"
            if kind == "full":
                state[f"{prefix}.diff"] = torch.randn(layer.weight.shape, generator=generator) * scale * 0.1
                if layer.bias is not None:
                    state[f"{prefix}.diff_b"] = torch.randn(layer.bias.shape, generator=generator) * scale * 0.1
            elif kind == "lora":
                weight = layer.weight.detach().float()
                down = torch.randn(rank, *weight.shape[1:], generator=generator) * scale
                up = torch.randn(weight.shape[0], rank, *([1] * (weight.dim() - 2)), generator=generator) * scale
                state.update({f"{prefix}.lora_A.weight": down, f"{prefix}.lora_B.weight": up,
                              f"{prefix}.alpha": torch.tensor(alpha)})
                if dora:
                    delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * (alpha / rank)
                    norm = (weight + delta).flatten(1).norm(dim=1)
                    state[f"{prefix}.dora_scale"] = norm * (1 + 0.2 * torch.rand(norm.shape, generator=generator))
            else:
                tensors = _lycoris_tensors(layer, kind, rank, alpha, generator, scale)
                state.update({f"{prefix}.{key}": value for key, value in tensors.items()})
    return state


def request(adapter: Any, seed: int = 7, steps: int = 2, size: int = 32, prompt: str = "a photo of a cat") -> GenerateRequest:
    """A small txt2img request with the architecture's default sampler."""
    return GenerateRequest(prompt=prompt, width=size, height=size, steps=steps, guidance_scale=1.0, seed=seed,
                           sampler=adapter.arch.spec.default_sampler)


def image(adapter: Any, **kwargs: Any) -> np.ndarray:
    """One generated image as a float array in 0..255."""
    return np.asarray(adapter.generate([request(adapter, **kwargs)])[0], dtype=np.float32)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())
