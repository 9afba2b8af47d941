"""The jobs ai-toolkit's web UI writes for SD 1.5, SDXL and Z-Image (turbo, base, de-turbo), and its generate
example, validate and dry-run as they are (model paths pointed at the tiny models)."""

from pathlib import Path

import pytest

import run
from toolkit.config.job import load_job_config

from tests.test_run import image_folder

FIXTURES = Path(__file__).parents[1] / "fixtures" / "aitoolkit"
UI_JOBS = {"ui_sd15.yaml": "sd15", "ui_sdxl.yaml": "sdxl", "ui_zimage_turbo.yaml": "zimage:turbo", "ui_zimage.yaml": "zimage",
           "ui_zimage_deturbo.yaml": "zimage:deturbo"}
UI_IGNORED = {"process[].sqlite_db_path", "process[].performance_log_every", "save.push_to_hub", "datasets[].controls",
              "datasets[].shrink_video_to_frames", "datasets[].num_frames", "train.bypass_guidance_embedding",
              "train.switch_boundary_every", "logging.use_ui_logger", "sample.num_frames", "sample.fps"}
"""What the UI writes that easel does not use (all at ai-toolkit's defaults, so nothing is refused)."""


@pytest.fixture
def tiny_paths(tmp_path, monkeypatch) -> Path:
    """The ${...} paths the Z-Image fixtures name (placeholders: a dry run loads no model)."""
    for name, value in (("TINY_ASSISTANT", tmp_path / "assistant.safetensors"), ("TINY_ZIMAGE", tmp_path / "zimage"),
                        ("TINY_ZIMAGE_FILE", tmp_path / "zimage" / "transformer.safetensors")):
        monkeypatch.setenv(name, str(value))
    return tmp_path


@pytest.mark.parametrize("name", sorted(UI_JOBS))
def test_ui_job_validates_with_its_ui_keys_named_once(name, registry, tiny_paths):
    loaded = load_job_config(FIXTURES / name, registry)
    process = loaded.processes[0]
    assert process.model.arch == UI_JOBS[name]
    assert set(loaded.ignored) == UI_IGNORED, set(loaded.ignored) ^ UI_IGNORED
    assert loaded.warnings == []
    assert (process.network.linear, process.network.conv, process.train.optimizer) == (32, 16, "adamw8bit")
    assert len(process.sample.all_prompts()) == 10


@pytest.mark.parametrize("name", sorted(UI_JOBS))
def test_ui_job_dry_runs(name, tiny_paths, capsys):
    dataset = image_folder(tiny_paths)
    code = run.main(["--dry-run", str(FIXTURES / name), "--set", f"config.process.0.datasets.0.folder_path={dataset}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"architecture: {UI_JOBS[name]}" in captured.out
    assert [line for line in captured.err.splitlines() if "ignored keys" in line], captured.err


def test_generate_example_dry_runs_as_sd15(capsys):
    assert run.main(["--dry-run", str(FIXTURES / "generate_example.yaml")]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "ai-toolkit reads as sd15" in err
