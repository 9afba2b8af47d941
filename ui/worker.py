"""The worker process: runs the queued jobs, one at a time per device, each as ``python run.py CONFIG``.

``python -m ui.worker --state OUTPUT/.easel-ui --root FOLDER`` (the UI server starts it). Each job is a child
process in its own session running exactly the command line a user would type, so a crash, an out-of-memory
kill or a hung import ends only that job: it is marked failed with the tail of its console output and the
queue goes on. A job whose run folder another run holds (its lock) waits, saying who holds it. One worker serves
a queue (a lock file); a second one exits at once.

Stop: the job gets SIGTERM, which makes the trainer finish its step, save and exit (143). When the worker
itself is told to stop (the UI shuts down, or the UI process is gone), it stops its jobs the same way and puts
them back at the front of the queue, so the next start continues them from their saves.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ui.runs import in_use_by, tail_text
from ui.store import JobRow, Store

RUN_PY = Path(__file__).resolve().parent.parent / "run.py"
STOP_WAIT = 120.0
"""Seconds a stopped job may take to save before it is killed."""


@dataclass
class Running:
    job: JobRow
    process: subprocess.Popen
    log: IO[Any]
    device: str
    stop_sent: float | None = None


def job_command(config: Path) -> list[str]:
    """The command a job runs: the CLI itself."""
    return [sys.executable, str(RUN_PY), str(config)]


class Worker:
    """The loop: reap finished jobs, pass on stop requests, start what may start."""

    def __init__(self, store: Store, root: Path, parent: int | None = None, poll: float = 0.2):
        self.store = store
        self.root = root
        self.parent = parent
        self.poll = poll
        self.running: dict[int, Running] = {}
        self.stopping = False
        self._auto: str | None = None

    def device_of(self, name: str) -> str:
        """The device a job occupies: ``auto`` is what it resolves to here, ``cuda`` is ``cuda:0``."""
        if name == "auto":
            if self._auto is None:
                probe = subprocess.run([sys.executable, "-c", "from toolkit.devices import resolve_device; "
                                        "print(resolve_device('auto'))"], cwd=RUN_PY.parent, capture_output=True, text=True)
                self._auto = probe.stdout.strip() or "cpu"
            name = self._auto
        return "cuda:0" if name == "cuda" else name

    def start(self, job: JobRow) -> None:
        log = self.store.log_path(job.id).open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(job_command(self.store.config_path(job.id)), cwd=self.root, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.store.set_pid(job.id, process.pid)
        self.running[job.id] = Running(job, process, log, self.device_of(job.device))

    def reap(self) -> None:
        for job_id, entry in list(self.running.items()):
            code = entry.process.poll()
            if code is None:
                continue
            entry.log.close()
            del self.running[job_id]
            row = self.store.get(job_id)
            if self.stopping and not (row and row.stop_requested):
                self.store.requeue(job_id, "interrupted when the UI stopped; continues from its last save")
            else:
                status, message = outcome(code, bool(row and row.stop_requested), self.store.log_path(job_id))
                self.store.finish(job_id, status, code, message)

    def pass_stops(self) -> None:
        now = time.time()
        for job_id, entry in self.running.items():
            row = self.store.get(job_id)
            wanted = self.stopping or (row is not None and row.stop_requested)
            if wanted and entry.stop_sent is None:
                _signal(entry.process, signal.SIGTERM)
                entry.stop_sent = now
            elif entry.stop_sent is not None and now - entry.stop_sent > STOP_WAIT:
                _signal(entry.process, signal.SIGKILL)

    def start_free(self) -> None:
        busy = {entry.device for entry in self.running.values()}
        while (job := self.store.claim(busy, self.device_of, waiting_for)) is not None:
            self.start(job)
            busy.add(self.device_of(job.device))

    def orphaned(self) -> bool:
        return self.parent is not None and os.getppid() != self.parent

    def loop(self) -> None:
        for row in self.store.active():  # left running by a worker that died: they continue from their saves
            self.store.requeue(row.id, "interrupted (the worker stopped); continues from its last save")
        while True:
            self.reap()
            if self.orphaned():
                self.stopping = True
            self.pass_stops()
            if self.stopping:
                if not self.running:
                    return
            else:
                self.start_free()
            time.sleep(self.poll)


def waiting_for(job: JobRow) -> str | None:
    """Why ``job`` may not start yet: another run (a command-line run of the same config, say) holds its run folder.

    Started anyway, its ``run.py`` would stop at once with that run's name (``toolkit.run_lock``); it waits instead.
    """
    who = in_use_by(job.run_dir)
    return f"waiting: its run folder is in use by {who}; it starts when that run ends" if who else None


def outcome(code: int, stop_requested: bool, log: Path) -> tuple[str, str]:
    """(status, message) of a job's exit code."""
    if code == 0:
        return "done", ""
    if stop_requested and code in (130, 143):
        return "stopped", "stopped on request; saved"
    if code < 0:
        why = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return "failed", f"the job's process died of signal {-code}{why}\n{tail_text(log, 20)}"
    return "failed", f"exit code {code}\n{tail_text(log, 20)}"


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.worker", description="Run the UI's queued jobs.")
    parser.add_argument("--state", type=Path, required=True, help="the UI's state folder (OUTPUT/.easel-ui)")
    parser.add_argument("--root", type=Path, required=True, help="the folder jobs run in")
    parser.add_argument("--parent", type=int, help="stop (saving the jobs) when this process is gone")
    args = parser.parse_args(argv)
    store = Store(args.state)
    lock = (args.state / "worker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another worker serves this queue
    worker = Worker(store, args.root, args.parent)

    def stop(_signum: int, _frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
