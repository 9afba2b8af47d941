"""Tiny random ControlNets and IP-Adapters for the tiny models, built by each architecture's declared builder
(``ArchSpec.controlnet.tiny`` / ``ip_adapter.tiny``), saved to disk once per session and loaded through the real
loading code; adapters loaded once per module."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image, ImageDraw

from toolkit.config.blocks import ModelConfig
from toolkit.models.loading import load_adapter
from toolkit.models.tiny import tiny_builder, tiny_folder
from toolkit.registry import load_object

ARCHS = ("sd15", "sdxl", "zimage")


@pytest.fixture(scope="session")
def base(registry: Any) -> Callable[[str], Path]:
    """The tiny model folder of an architecture."""
    return lambda arch: tiny_folder(arch, tiny_builder(registry.arch(arch)))


@pytest.fixture(scope="session")
def controlnet(registry: Any, base: Callable[[str], Path], tmp_path_factory: Any) -> Callable[..., Path]:
    """``controlnet(arch, seed=3, union=False)``: the folder of a tiny random ControlNet for ``tiny:<arch>``."""
    built: dict[tuple, Path] = {}

    def make(arch: str, seed: int = 3, union: bool = False) -> Path:
        key = (arch, seed, union)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"controlnet_{arch}_{seed}{'_union' if union else ''}")
            load_object(registry.arch(arch).spec.controlnet.tiny)(base(arch), folder, seed, union=union)
            built[key] = folder
        return built[key]

    return make


@pytest.fixture(scope="session")
def ip_adapter(registry: Any, base: Callable[[str], Path], tmp_path_factory: Any) -> Callable[[str], Path]:
    """``ip_adapter(arch)``: the folder with a tiny IP-Adapter (``ip-adapter.safetensors``, ``image_encoder/``)."""
    built: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in built:
            folder = tmp_path_factory.mktemp(f"ip_adapter_{arch}")
            load_object(registry.arch(arch).spec.ip_adapter.tiny)(base(arch), folder, 5)
            built[arch] = folder
        return built[arch]

    return make


@pytest.fixture(scope="module")
def adapters(registry: Any, base: Callable[[str], Path]) -> dict[str, Any]:
    """One CPU adapter per architecture for a module's tests (loaded when first asked for)."""
    class Lazy(dict):
        def __missing__(self, arch: str) -> Any:
            self[arch] = load_adapter(ModelConfig(name_or_path=str(base(arch)), arch=arch), registry, device="cpu")
            return self[arch]

    return Lazy()


def shapes(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A picture with clear structure: a dark square and a red disc on white."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle([width // 8, height // 4, width // 2, 3 * height // 4], fill=(30, 30, 30))
    draw.ellipse([width // 2, height // 8, 7 * width // 8, height // 2], fill=(220, 40, 40))
    return image
