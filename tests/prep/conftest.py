"""Tiny captioning models, built once per session."""

import pytest

from tests.tiny_transformers import tiny_model


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory):
    return tiny_model("blip", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_blip2(tmp_path_factory):
    return tiny_model("blip2", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_florence2(tmp_path_factory):
    return tiny_model("florence2", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return tiny_model("clip", tmp_path_factory)
