"""Every shipped example config validates, and says on its first lines how to run it."""

from pathlib import Path

import pytest

from toolkit.config.job import load_job_config

from tests.conftest import ROOT

EXAMPLES = sorted(p for p in (ROOT / "config" / "examples").rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, registry):
    loaded = load_job_config(path, registry)
    assert loaded.processes


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.suffix != ".json"], ids=lambda p: p.name)
def test_example_starts_with_its_command(path: Path):
    head = path.read_text().splitlines()[:3]
    assert any(line.startswith("# python run.py ") for line in head), f"{path.name}: first lines should give the command"
