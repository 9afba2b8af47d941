"""Facts the config and the runtime share are written once: names of optimizers and schedules, default rank,
and a ``--set`` of steps or epochs replaces the other one of the file instead of failing."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from tests.conftest import ROOT
from toolkit.config.blocks import NetworkConfig, TrainConfig
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError
from toolkit.train.lr import SCHEDULERS
from toolkit.train.optimizers import OPTIMIZERS


def _choices(field: str) -> tuple[str, ...]:
    return typing.get_args(TrainConfig.model_fields[field].annotation)  # pydantic keeps the Literal, the lowercasing aside


def test_config_choices_are_the_runtime_tables() -> None:
    assert _choices("optimizer") == OPTIMIZERS
    assert _choices("lr_scheduler") == SCHEDULERS


def test_the_rank_default_is_the_schema_default() -> None:
    assert NetworkConfig.model_fields["linear"].default == 16
    assert NetworkConfig().linear == 16 and NetworkConfig().linear_alpha == 16.0


@pytest.mark.parametrize("example", ["sd15_style_lora", "anything_v5_style_lora"])
def test_set_steps_on_an_epoch_example_replaces_its_epochs(registry, example: str) -> None:
    path = ROOT / "config" / "examples" / f"{example}.yaml"
    loaded = load_job_config(path, registry, overrides=["config.process.0.train.steps=500"])
    train = loaded.processes[0].train
    assert (train.steps, train.epochs, train.total_steps(7)) == (500, None, 500)
    assert "epochs" not in loaded.resolved["config"]["process"][0]["train"]  # config.yaml of the run says what ran
    (note,) = loaded.notes
    assert note.startswith("--set config.process.0.train.steps=500 replaces config.process[0].train.epochs, which the file set to")


def test_set_epochs_replaces_the_files_steps(registry) -> None:
    loaded = load_job_config(ROOT / "config/examples/quickstart.yaml", registry, overrides=["config.process.0.train.epochs=2"])
    assert (loaded.processes[0].train.steps, loaded.processes[0].train.epochs) == (None, 2)
    assert "replaces config.process[0].train.steps" in loaded.notes[0]


def test_both_from_the_command_line_stay_an_error(registry) -> None:
    overrides = ["config.process.0.train.epochs=2", "config.process.0.train.steps=3"]
    with pytest.raises(ConfigError, match="set either steps or epochs, not both"):
        load_job_config(ROOT / "config/examples/quickstart.yaml", registry, overrides=overrides)


def test_the_replacement_is_said_in_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.train.harness import run_main, write_config

    config = write_config(tmp_path, train={"steps": 6})
    assert run_main(["--dry-run", str(config), "--set", "config.process.0.train.epochs=2"]) == 0
    captured = capsys.readouterr()
    assert "--set config.process.0.train.epochs=2 replaces config.process[0].train.steps, which the file set to 6" in captured.err
    assert "training: 4 steps (2 per epoch)" in captured.out  # 4 images, batch 2, 2 epochs
