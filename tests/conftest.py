"""Test-wide settings: never touch the network, keep torch to the machine's cores."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from toolkit.registry import Registry  # noqa: E402


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The real registry: built-in jobs and every extension in extensions/."""
    return Registry.discover(("jobs",), ROOT / "extensions")
