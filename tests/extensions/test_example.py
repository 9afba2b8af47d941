"""The template extension works end to end, so copying it gives a working start."""

import pytest

import run
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError

from tests.conftest import ROOT


def test_example_extension_runs(tmp_path):
    code = run.main([str(ROOT / "config/examples/example_note.yaml"), "--set", f"config.process.0.training_folder={tmp_path}"])
    assert code == 0
    assert (tmp_path / "example_note" / "note.txt").read_text() == "hello from an extension\n" * 2


def test_example_config_is_strict(tmp_path, registry):
    config = tmp_path / "c.yaml"
    config.write_text("job: extension\nconfig:\n  name: n\n  process:\n    - type: example_note\n      mesage: hi\n")
    with pytest.raises(ConfigError, match="did you mean 'message'"):
        load_job_config(config, registry)
