"""Session fixtures: the folders of the tiny transformers models (``tiny:blip`` ... ``tiny:clip``, toolkit/testing/tiny_transformers.py).

Each is built once into the test cache (EASEL_CACHE_DIR) by the same code a ``tiny:`` name in a config
uses; tests pass the folder path, so the real loading code reads it like any local model.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_model(kind: str) -> Path:
    """The folder of the tiny ``kind`` model (built on first use)."""
    from toolkit.models.tiny import transformers_tiny_folder

    return transformers_tiny_folder(kind, "test")


@pytest.fixture(scope="session")
def tiny_blip() -> Path:
    return tiny_model("blip")


@pytest.fixture(scope="session")
def tiny_blip2() -> Path:
    return tiny_model("blip2")


@pytest.fixture(scope="session")
def tiny_florence2() -> Path:
    return tiny_model("florence2")


@pytest.fixture(scope="session")
def tiny_git() -> Path:
    return tiny_model("git")


@pytest.fixture(scope="session")
def tiny_vit_gpt2() -> Path:
    return tiny_model("vit_gpt2")


@pytest.fixture(scope="session")
def tiny_clip() -> Path:
    return tiny_model("clip")
