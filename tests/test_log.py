"""The console: expected library warnings are dropped (only those messages), everything else still shows."""

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import logging
from toolkit.log import setup_console
setup_console()
import transformers
transformers.CLIPImageProcessor, transformers.SiglipImageProcessor  # the lookups that warn without torchvision
logging.getLogger("transformers.utils.import_utils").warning("another transformers warning")
cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
cpu_ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please pip install kernels", "No module")
cpu_ops.warning("a bitsandbytes warning to act on")
"""


def test_expected_warnings_are_dropped_and_others_kept() -> None:
    """Every SD/SDXL run printed "`CLIPImageProcessor` requires torchvision (not installed); falling back to ..." twice."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "requires torchvision" not in done.stderr and "gemm_4bit_forward" not in done.stderr
    assert "another transformers warning" in done.stderr and "a bitsandbytes warning to act on" in done.stderr
