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
# One cache per test process: each pytest-xdist worker gets its own (some tests delete and rebuild the tiny models).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if "EASEL_CACHE_DIR" not in os.environ or (_WORKER and os.environ.get("EASEL_TEST_CACHE_OWNER") != _WORKER):
    os.environ["EASEL_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"easel-test-cache-{_WORKER or 'main'}-")
    os.environ["EASEL_TEST_CACHE_OWNER"] = _WORKER or ""
    atexit.register(shutil.rmtree, os.environ["EASEL_CACHE_DIR"], True)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def registry():
    """The real registry: the built-in jobs and every extension under extensions/."""
    from toolkit.registry import Registry

    return Registry.discover(("jobs",), ROOT / "extensions")
