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


def test_a_copy_of_the_template_is_a_working_extension(tmp_path):
    """What extensions/example/README.md tells a user to do: copy, rename the names and the import paths. The copy
    is discovered, and its architecture loads its tiny model and generates, with nothing edited outside the folder."""
    import shutil
    import uuid

    from toolkit.config.blocks import ModelConfig
    from toolkit.job import Job
    from toolkit.models.base import GenerateRequest
    from toolkit.models.loading import load_adapter
    from toolkit.registry import Registry

    package = f"ext_{uuid.uuid4().hex[:8]}"  # imports are cached per name
    root = tmp_path / package
    shutil.copytree(ROOT / "extensions" / "example", root / "mynote", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "__init__.py").write_text("")
    for source in (root / "mynote").glob("*.py"):
        text = source.read_text().replace("extensions.example.", f"{package}.mynote.").replace("example_note", "my_note")
        source.write_text(text.replace('name="example"', 'name="myarch"'))
    registry = Registry.discover(("jobs",), root)
    assert not registry.broken and registry.process("extension", "my_note").name == "my_note"
    assert registry.arch("myarch").spec.adapter == f"{package}.mynote.adapter:ExampleAdapter"
    adapter = load_adapter(ModelConfig(name_or_path="tiny:myarch", arch="myarch"), registry, device="cpu")
    request = GenerateRequest(prompt="a house", width=64, height=48, steps=2, guidance_scale=1.0, seed=1, sampler="euler")
    assert adapter.generate([request])[0].size == (64, 48)
    config = tmp_path / "c.yaml"
    config.write_text(f"job: extension\nconfig:\n  name: mine\n  process:\n    - type: my_note\n"
                      f"      training_folder: {tmp_path / 'out'}\n      message: copied\n")
    Job(load_job_config(config, registry), registry).run()
    assert (tmp_path / "out" / "mine" / "note.txt").read_text() == "copied\n"
