"""Tiny captioning and CLIP models (built once per session), and running run.py's main()."""

import logging

import pytest

import run
from toolkit.log import log
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
