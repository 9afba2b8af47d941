"""The dry run's plan and the trainer count the same steps (one function: ``TrainConfig.total_steps``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.train.harness import make_dataset, run_main, write_config
from toolkit.train.logs import read_losses


@pytest.mark.parametrize("images", [2, 5])
@pytest.mark.parametrize("accumulation", [1, 2, 3])
@pytest.mark.parametrize("epochs", [1, 3])
def test_the_plan_says_the_steps_training_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str], images: int,
                                               accumulation: int, epochs: int) -> None:
    make_dataset(tmp_path / "data", count=images)
    config = write_config(tmp_path, train={"steps": None, "epochs": epochs, "batch_size": 1, "gradient_accumulation": accumulation},
                          save={"save_every": None}, sample=None)
    assert run_main(["--dry-run", str(config)]) == 0
    planned = re.search(r"training: (\d+) steps \(([\d.]+) per epoch\)", capsys.readouterr().out)
    assert planned is not None
    assert float(planned.group(2)) == pytest.approx(images / accumulation, rel=1e-5)  # batch 1: a batch per image
    assert run_main([str(config)]) == 0
    trained = read_losses(tmp_path / "output" / "fakerun" / "loss.csv")
    assert int(planned.group(1)) == len(trained) == -(-epochs * images // accumulation)
