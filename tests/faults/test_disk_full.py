"""A full disk mid-run: one clear error naming the path and the last good save (exit 2), nothing half-written kept,
and once space is freed the same command resumes to the same LoRA as a run that never stopped.

Before: a raw ``RuntimeError: [enforce fail ...]`` (torch.save) or ``SafetensorError`` (exit 1). The disk is a
real 4 MB tmpfs where this machine allows mounting one, else a write hook raising ENOSPC.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.faults.disk import Budget, fill_after, fill_up, small_tmpfs
from tests.train.fakes import FakeAdapter
from tests.train.harness import run_main, write_config
from toolkit.output import TEMP_PATTERN

SECTIONS = dict(train={"steps": 6}, save={"save_every": 2, "max_step_saves_to_keep": 0})
FILL_AT = 3
"""The predict call (one per step here: step 3) from which the disk is full."""


def fill_during_training(monkeypatch: pytest.MonkeyPatch, fill) -> None:  # noqa: ANN001
    original = FakeAdapter.predict

    def predict(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if self.predict_calls + 1 == FILL_AT:
            fill()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FakeAdapter, "predict", predict)


def straight_lora(tmp_path: Path, **sections) -> dict[str, torch.Tensor]:  # noqa: ANN003
    config = write_config(tmp_path / "straight", **sections)
    assert run_main([str(config)]) == 0
    return load_file(tmp_path / "straight" / "output" / "fakerun" / "fakerun.safetensors")


def check_stopped_cleanly(folder: Path, error: str) -> None:
    assert "no space left on device at " in error and "unexpected" not in error and "Logging error" not in error, error
    assert f"The run stopped; the last good save is {folder / 'fakerun_000000002.safetensors'}" in error, error
    assert not [p for p in folder.rglob("*") if TEMP_PATTERN.fullmatch(p.name)]
    assert load_file(folder / "fakerun_000000002.safetensors")  # the previous save is intact
    torch.load(folder / "fakerun_000000002.state.pt", weights_only=True)


def test_a_full_tmpfs_stops_the_run_and_it_resumes_once_space_is_freed(tmp_path: Path, monkeypatch, capsys) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root); test_a_write_hook_... covers the same path")
        sections = dict(SECTIONS, sample={"sample_every": 2})
        config = write_config(disk, **sections)
        filled: list[Path] = []
        fill_during_training(monkeypatch, lambda: filled.append(fill_up(disk)))
        assert run_main([str(config)]) == 2
        folder = disk / "output" / "fakerun"
        check_stopped_cleanly(folder, capsys.readouterr().err)
        filled[0].unlink()
        monkeypatch.undo()
        assert run_main([str(config)]) == 0
        resumed = load_file(folder / "fakerun.safetensors")
        assert "Resuming from fakerun_000000002.state.pt" in (folder / "log.txt").read_text()
    expected = straight_lora(tmp_path, **sections)
    assert resumed.keys() == expected.keys() and all(torch.equal(resumed[k], expected[k]) for k in expected)


@pytest.mark.parametrize("budget", [0, 700])
def test_a_write_hook_raising_enospc_stops_the_run_and_it_resumes(tmp_path: Path, monkeypatch, capsys, budget: int) -> None:
    """Budget 0: the next write fails outright; 700 bytes: it fails partway (a loss row or a save cut short)."""
    sections = dict(SECTIONS, sample=None)
    config = write_config(tmp_path / "run", **sections)
    space = Budget(10 ** 12)
    fill_after(monkeypatch, space)
    fill_during_training(monkeypatch, lambda: setattr(space, "left", budget))
    assert run_main([str(config)]) == 2
    folder = tmp_path / "run" / "output" / "fakerun"
    check_stopped_cleanly(folder, capsys.readouterr().err)
    rows = (folder / "loss.csv").read_text().splitlines()
    assert all(len(row.split(",")) == 4 for row in rows)  # no half line
    monkeypatch.undo()
    assert run_main([str(config)]) == 0
    resumed, expected = load_file(folder / "fakerun.safetensors"), straight_lora(tmp_path, **sections)
    assert resumed.keys() == expected.keys() and all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_a_state_save_on_a_full_disk_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    """torch.save reports a full disk as RuntimeError('[enforce fail ...]'); it becomes DiskFull, the old file kept."""
    from toolkit.output import DiskFull
    from toolkit.train.state import save_state

    path = tmp_path / "run_000000002.state.pt"
    save_state(path, {"step": 1, "network": {"w": torch.zeros(3)}})
    fill_after(monkeypatch, Budget(300))
    with pytest.raises(DiskFull, match=f"no space left on device at {path}; the previous {path.name} is intact"):
        save_state(path, {"step": 2, "network": {"w": torch.zeros(10_000)}})
    assert torch.load(path, weights_only=True)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_log_txt_on_a_full_disk_says_so_once_and_stops(tmp_path: Path, capsys) -> None:
    import errno

    from toolkit.log import attach_file, detach, log

    class Full:
        def write(self, text: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            pass

    handler = attach_file(tmp_path / "log.txt")
    log.warning("written")
    handler.stream = Full()
    log.warning("first lost line")
    log.warning("second lost line")
    detach(handler)
    error = capsys.readouterr().err
    assert error.count(f"no space left on device at {tmp_path / 'log.txt'}") == 1 and "Logging error" not in error
    assert "written" in (tmp_path / "log.txt").read_text()


def test_previews_on_a_full_tmpfs_are_one_clear_error(tmp_path: Path) -> None:
    from PIL import Image

    from toolkit.output import DiskFull
    from toolkit.train.sampling import save_previews

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root)")
        fill_up(disk)
        noise = Image.effect_noise((256, 256), 64).convert("RGB")
        with pytest.raises(DiskFull, match=f"no space left on device at {disk / 'samples'}"):
            save_previews([noise, noise], disk / "samples", 4, "png")
        assert not [p for p in disk.rglob("*") if TEMP_PATTERN.fullmatch(p.name)]


def test_any_other_full_disk_error_is_exit_2_not_unexpected(tmp_path: Path, monkeypatch, capsys) -> None:
    """A library writing its own file (not through toolkit.output) still gets the plain message."""
    import errno

    from toolkit.job import Job

    def full(self) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))

    monkeypatch.setattr(Job, "run", full)
    config = write_config(tmp_path)
    assert run_main([str(config)]) == 2
    error = capsys.readouterr().err
    assert "no space left on device (OSError" in error and "unexpected" not in error
