"""Concurrent runs: a run locks its run folder; a second run of the same config exits 2 at once naming the holder.

Before: two runs of one config both exited 0, each step twice in loss.csv, each overwriting the other's saves.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.harness import ROOT, run_main, write_config
from toolkit.output import RunFolder
from toolkit.run_lock import LOCK_NAME, RunInUse, RunLock, read_holder
from toolkit.train.logs import read_losses


def harness(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests/train/harness.py"), str(config), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_run_of_one_config_exits_2_naming_the_first_and_a_killed_ones_lock_is_taken_over(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, train={"steps": 1_000_000}, save={"save_every": 1_000_000}, sample=None)
    folder = tmp_path / "output" / "fakerun"
    first = harness(config)
    try:
        wait_for(lambda: len(read_losses(folder / "loss.csv")) >= 3 or first.poll() is not None)
        assert first.poll() is None, first.communicate()[1][-2000:]
        holder = read_holder(folder)
        assert holder is not None and holder.pid == first.pid and holder.host == socket.gethostname()
        started = time.monotonic()
        second = harness(config)
        _, error = second.communicate(timeout=120)
        assert second.returncode == 2, error[-2000:]
        assert f"the run folder {folder} is in use by another easel run (process {first.pid} on {socket.gethostname()}" in error
        assert time.monotonic() - started < 60
        log = (folder / "log.txt").read_text()
        assert log.count("Training fakerun") == 1 and "is in use" not in log  # the second run wrote nothing there
        steps = [int(row["step"]) for row in read_losses(folder / "loss.csv")]
        assert steps == list(range(1, len(steps) + 1))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert (folder / LOCK_NAME).exists()  # a killed run cannot remove it...
    assert run_main([str(config), "--set", "config.process.0.train.steps=2"]) == 0  # ...but the next run takes it over
    assert f"took over the lock of {folder} left by process {first.pid}" in capsys.readouterr().err
    assert not (folder / LOCK_NAME).exists()


def test_the_lock_is_held_against_a_second_opener_and_freed_on_close(tmp_path: Path) -> None:
    first = RunFolder(tmp_path, "run")
    first.open({"a": 1})
    with pytest.raises(RunInUse, match=f"process {os.getpid()} on "):
        RunFolder(tmp_path, "run").open({"a": 1})
    assert "error" not in (tmp_path / "run" / "log.txt").read_text()
    first.close()
    again = RunFolder(tmp_path, "run")
    assert again.open({"a": 1}) is True
    again.close()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_without_flock_a_dead_holder_on_this_host_is_taken_over_and_a_live_one_kept(tmp_path: Path, monkeypatch) -> None:
    import toolkit.run_lock as run_lock

    monkeypatch.setattr(run_lock, "_flock", lambda fd: None)  # a file system without flock (or Windows)
    host = socket.gethostname()
    lock = tmp_path / LOCK_NAME
    lock.write_text(f'{{"pid": {dead_pid()}, "host": "{host}", "started": "then"}}\n')
    taken = RunLock.acquire(tmp_path)
    assert taken.previous is not None and read_holder(tmp_path).pid == os.getpid()
    with pytest.raises(RunInUse, match=f"If that process is not running, delete {lock}"):
        RunLock.acquire(tmp_path)  # held by this live process
    taken.release()
    lock.write_text(f'{{"pid": {dead_pid()}, "host": "another-host", "started": "then"}}\n')
    with pytest.raises(RunInUse, match="on another-host"):
        RunLock.acquire(tmp_path)  # its process cannot be checked from here


def test_stale_temp_files_of_a_killed_write_are_removed_when_the_folder_opens(tmp_path: Path) -> None:
    from toolkit.log import setup_console

    setup_console()  # log.txt gets easel's info lines, as in a run
    folder = tmp_path / "run"
    (folder / "samples").mkdir(parents=True)
    stale = [folder / ".run_000000004.safetensors.easel-ab12cd_3.tmp", folder / "samples" / ".000000004_00.png.easel-zz99zz99.tmp"]
    mine = [folder / ".notes.tmp", folder / "run.tmp", folder / ".x.easel-short.tmp"]
    for path in stale + mine:
        path.write_bytes(b"half")
    run = RunFolder(tmp_path, "run")
    run.open({})
    run.close()
    assert not any(path.exists() for path in stale) and all(path.exists() for path in mine)
    assert "Removed 2 unfinished temp file(s)" in (folder / "log.txt").read_text()


def test_in_use_names_a_live_holder_in_another_process_and_frees_a_stale_or_released_lock(tmp_path: Path) -> None:
    from toolkit.run_lock import in_use

    assert in_use(tmp_path) is None  # no lock file
    code = f"from toolkit.run_lock import RunLock; RunLock.acquire({str(tmp_path)!r}); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        error = in_use(tmp_path)
        assert isinstance(error, RunInUse) and error.holder is not None and error.holder.pid == holder.pid
        assert f"is in use by another easel run (process {holder.pid} on {socket.gethostname()}" in str(error)
        assert in_use(tmp_path) is not None  # the probe took nothing away
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert (tmp_path / LOCK_NAME).exists() and in_use(tmp_path) is None  # a killed holder's lock is free
    live = tmp_path / LOCK_NAME
    live.write_text(f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}", "started": "then"}}\n')
    assert in_use(tmp_path) is None  # its pid runs (reused), but nobody holds the file
    live.write_text("")
    assert in_use(tmp_path) is not None  # a run writing its name
    os.utime(live, (time.time() - 60, time.time() - 60))
    assert in_use(tmp_path) is None  # ...or one killed before it wrote it, long ago
    taken = RunLock.acquire(tmp_path)
    assert in_use(tmp_path) is not None
    taken.release()
    assert in_use(tmp_path) is None
