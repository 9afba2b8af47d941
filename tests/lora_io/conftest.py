"""Tiny models for the LoRA file tests, loaded through the real loading code (``tiny:<arch>``)."""

from __future__ import annotations

from typing import Callable

import pytest

from toolkit.config.blocks import ModelConfig
from toolkit.models.loading import load_adapter

ARCHS = ("sd15", "sdxl", "zimage")


@pytest.fixture(scope="session")
def new_adapter(registry) -> Callable:
    """A factory of freshly loaded tiny adapters (fp32, CPU)."""

    def make(arch: str):
        return load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch), registry, device="cpu", dtype="fp32")

    return make


@pytest.fixture(scope="module")
def adapters(new_adapter) -> dict:
    """One adapter per architecture, shared by a module's tests (which must leave it as they found it)."""
    cache: dict = {}

    class Lazy(dict):
        def __missing__(self, arch: str):
            cache[arch] = new_adapter(arch)
            self[arch] = cache[arch]
            return cache[arch]

    return Lazy()
