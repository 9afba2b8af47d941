"""Tiny captioning and CLIP models (built once per session), and running run.py's main()."""

import logging

import pytest

import run
from tests.tiny_transformers import tiny_blip, tiny_blip2, tiny_clip, tiny_florence2, tiny_vit_gpt2  # noqa: F401
from toolkit.log import log


@pytest.fixture
def run_main():
    """``run_main(*argv)`` -> exit code of ``python run.py *argv``."""
    return lambda *argv: run.main([str(arg) for arg in argv])


@pytest.fixture
def messages():
    """What easel logs during the test (its console handler may hold an older stderr), as one string per message."""
    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)
