"""Tiny CLIP, built once per session."""

import pytest

from tests.tiny_transformers import tiny_model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return tiny_model("clip", tmp_path_factory)
