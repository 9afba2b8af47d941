"""The tiny model of each ``AdapterSuite`` subclass, loaded once per class."""

from typing import Any

import pytest

from toolkit.config.blocks import ModelConfig
from toolkit.models.base import ModelAdapter
from toolkit.models.loading import load_adapter


@pytest.fixture(scope="class")
def adapter(request: pytest.FixtureRequest, registry: Any) -> ModelAdapter:
    """``tiny:<arch>`` for the test class's ``arch`` (variant included), on the CPU."""
    arch = request.cls.arch
    return load_adapter(ModelConfig(name_or_path=f"tiny:{arch.partition(':')[0]}", arch=arch), registry, device="cpu")
