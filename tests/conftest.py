"""Test-wide settings: never touch the network, keep torch to the machine's cores, tiny models in a temp cache."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only add contention on a shared machine
if "EASEL_CACHE_DIR" not in os.environ:
    os.environ["EASEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="easel-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EASEL_CACHE_DIR"], True)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def registry():
    """The real registry: the built-in jobs and every extension under extensions/."""
    from toolkit.registry import Registry

    return Registry.discover(("jobs",), ROOT / "extensions")
