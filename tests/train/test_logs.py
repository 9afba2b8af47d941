"""loss.csv on resume, the loss curve, and a silent log on other processes."""

from __future__ import annotations

from PIL import Image

from toolkit.config.blocks import LoggingConfig
from toolkit.train.logs import TrainLog, draw_loss_curve, read_losses


def test_csv_rows_and_cut_back_on_resume(tmp_path) -> None:
    log = TrainLog(tmp_path, enabled=True, total_steps=5, start_step=0, config=LoggingConfig(), run_name="run")
    for step in range(1, 5):
        log.step(step, 1.0 / step, 1e-4, 0.5)
    log.close()
    rows = read_losses(tmp_path / "loss.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["loss"] == 1 / 3
    resumed = TrainLog(tmp_path, enabled=True, total_steps=5, start_step=2, config=LoggingConfig(), run_name="run")
    resumed.step(3, 0.25, 1e-4, 0.5)
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_losses(tmp_path / "loss.csv")] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert resumed.plot() == tmp_path / "loss.png"


def test_loss_curve_png(tmp_path) -> None:
    path = tmp_path / "loss.png"
    draw_loss_curve([1, 2, 3, 4], [1.0, 0.8, 0.9, 0.5], path, size=(400, 200))
    with Image.open(path) as image:
        assert image.size == (400, 200)
        colours = {colour for _, colour in image.getcolors(maxcolors=100_000)}
    assert (30, 90, 200) in colours  # the smoothed curve is drawn


def test_tensorboard_events(tmp_path) -> None:
    log = TrainLog(tmp_path / "run", enabled=True, total_steps=2, start_step=0,
                   config=LoggingConfig(log_dir=str(tmp_path / "tb")), run_name="run")
    log.step(1, 0.5, 1e-4, 0.1)
    log.close()
    assert list((tmp_path / "tb" / "run").glob("events.out.tfevents.*"))


def test_a_disabled_log_writes_nothing(tmp_path) -> None:
    log = TrainLog(tmp_path, enabled=False, total_steps=3, start_step=0, config=LoggingConfig(log_dir=str(tmp_path / "tb")), run_name="run")
    log.step(1, 0.5, 1e-4, 0.1)
    log.write("hello")
    log.close()
    assert log.plot() is None and list(tmp_path.iterdir()) == []
