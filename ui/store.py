"""The job queue: one SQLite file under the output folder, shared by the UI server and the worker process.

A job row holds what the UI decided when it was queued (name, kind, device, run folder, total steps) and its
life: ``queued`` -> ``running`` (-> ``stopping``) -> ``done`` / ``stopped`` / ``failed``. The queue order is
``position`` (smaller first); a queued job the worker passes over says why in ``waiting``. Each job's config is
a file ``jobs/<id>.yaml`` beside the database (the file ``python run.py`` is given) and its console output
``jobs/<id>.log``.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    position REAL NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    pid INTEGER,
    exit_code INTEGER,
    message TEXT NOT NULL DEFAULT '',
    run_dir TEXT,
    total_steps INTEGER,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    waiting TEXT
);
"""
ACTIVE = ("running", "stopping")
FINISHED = ("done", "stopped", "failed")


@dataclass(frozen=True)
class JobRow:
    """One job of the queue."""

    id: int
    name: str
    kind: str
    device: str
    status: str
    position: float
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    exit_code: int | None
    message: str
    run_dir: str | None
    total_steps: int | None
    stop_requested: int
    waiting: str | None = None
    """Why the worker does not start this queued job yet (its run folder is in use by another run)."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Store:
    """The queue database and the job files beside it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.jobs_folder = self.folder / "jobs"
        self.jobs_folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "queue.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once so that the server and the worker never interleave."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def config_path(self, job_id: int) -> Path:
        return self.jobs_folder / f"{job_id}.yaml"

    def log_path(self, job_id: int) -> Path:
        return self.jobs_folder / f"{job_id}.log"

    def add(self, *, name: str, kind: str, device: str, config_text: str, run_dir: str | None,
            total_steps: int | None) -> int:
        """Queue a job at the end; returns its id. The config file is written before the row is visible."""
        with self._write() as db:
            last = db.execute("SELECT COALESCE(MAX(position), 0) FROM jobs").fetchone()[0]
            cursor = db.execute(
                "INSERT INTO jobs (name, kind, device, status, position, created, run_dir, total_steps) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)", (name, kind, device, last + 1, time.time(), run_dir, total_steps))
            job_id = int(cursor.lastrowid or 0)
            self.config_path(job_id).write_text(config_text, encoding="utf-8")
        return job_id

    def get(self, job_id: int) -> JobRow | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRow(**dict(row)) if row else None

    def all(self) -> list[JobRow]:
        """Active jobs, then queued ones in order, then finished ones, newest first."""
        with self._connect() as db:
            rows = [JobRow(**dict(row)) for row in db.execute("SELECT * FROM jobs")]
        order = {"running": 0, "stopping": 0, "queued": 1}
        return sorted(rows, key=lambda r: (order.get(r.status, 2), r.position if r.status == "queued" else -(r.ended or r.created)))

    def move(self, job_id: int, offset: int) -> bool:
        """Move a queued job ``offset`` places (negative: sooner); False when it is not queued."""
        with self._write() as db:
            queued = [dict(r) for r in db.execute("SELECT id, position FROM jobs WHERE status = 'queued' ORDER BY position")]
            ids = [r["id"] for r in queued]
            if job_id not in ids:
                return False
            index = ids.index(job_id)
            target = max(0, min(len(ids) - 1, index + offset))
            ids.insert(target, ids.pop(index))
            positions = sorted(r["position"] for r in queued)
            for job, position in zip(ids, positions):
                db.execute("UPDATE jobs SET position = ? WHERE id = ?", (position, job))
        return True

    def delete(self, job_id: int) -> bool:
        """Remove a job that is not running (its run folder stays); False when it is running."""
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] in ACTIVE:
                return False
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        for path in (self.config_path(job_id), self.log_path(job_id)):
            path.unlink(missing_ok=True)
        return True

    def request_stop(self, job_id: int) -> str | None:
        """Stop a running job (the worker sends it SIGTERM: it saves and exits) or cancel a queued one.

        Returns the new status, or None when the job is not running or queued."""
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == "queued":
                db.execute("UPDATE jobs SET status = 'stopped', ended = ?, message = 'cancelled before it started', "
                           "waiting = NULL WHERE id = ?", (time.time(), job_id))
                return "stopped"
            if row["status"] == "running":
                db.execute("UPDATE jobs SET status = 'stopping', stop_requested = 1 WHERE id = ?", (job_id,))
                return "stopping"
        return None

    def claim(self, busy: set[str], device_of: Any, waits: Any = lambda row: None) -> JobRow | None:
        """The first queued job whose device (``device_of(row.device)``) is not in ``busy`` and that
        ``waits(row)`` lets start (None; else the reason, kept in the row's ``waiting``), marked running."""
        with self._write() as db:
            for row in db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY position").fetchall():
                job = JobRow(**dict(row))
                reason = waits(job)
                if reason != job.waiting:
                    db.execute("UPDATE jobs SET waiting = ? WHERE id = ?", (reason, job.id))
                if reason is not None or device_of(job.device) in busy:
                    continue
                db.execute("UPDATE jobs SET status = 'running', started = ?, ended = NULL, exit_code = NULL, "
                           "message = '', stop_requested = 0 WHERE id = ?", (time.time(), job.id))
                return replace(job, status="running", waiting=None)
        return None

    def set_pid(self, job_id: int, pid: int | None) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET pid = ? WHERE id = ?", (pid, job_id))

    def finish(self, job_id: int, status: str, exit_code: int | None, message: str) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET status = ?, exit_code = ?, message = ?, ended = ?, pid = NULL WHERE id = ?",
                       (status, exit_code, message, time.time(), job_id))

    def requeue(self, job_id: int, message: str) -> None:
        """Put a job back at the front of the queue (it continues from its last save when it runs again)."""
        with self._write() as db:
            first = db.execute("SELECT COALESCE(MIN(position), 1) FROM jobs").fetchone()[0]
            db.execute("UPDATE jobs SET status = 'queued', position = ?, pid = NULL, stop_requested = 0, message = ? "
                       "WHERE id = ?", (first - 1, message, job_id))

    def active(self) -> list[JobRow]:
        with self._connect() as db:
            return [JobRow(**dict(r)) for r in db.execute("SELECT * FROM jobs WHERE status IN ('running', 'stopping')")]
