"""One run per run folder: ``RunLock`` holds ``<run folder>/.easel.lock`` while a job writes there.

The lock is an advisory ``flock`` on that file, which the kernel drops however the process ends (SIGKILL
included), so a lock left by a dead process is never taken for a live one. The file names its holder (PID,
host, start time, command) for the message a second run gets, and for the note when a stale lock is taken
over. Where flock is missing (Windows) or refused (some network file systems), the file is created
exclusively instead, and a lock whose holder is a dead process on this host is taken over. ``in_use`` tells,
without taking it, whether a run could open a folder now (the UI's queue waits on it).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.errors import EaselError

LOCK_NAME = ".easel.lock"
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
"""flock errors meaning the file system has no such locks (not that someone holds it)."""
FRESH = 10.0
"""Seconds a lock file that names no holder is taken for a run still writing its name."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run folder's lock."""

    pid: int
    host: str
    started: str
    command: str = ""

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(sys.argv)[:300])

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}, started {self.started}" + (f": {self.command}" if self.command else "")

    def dead_here(self) -> bool:
        """Whether this holder ran on this host and is no longer running."""
        return self.host == socket.gethostname() and not _alive(self.pid)


class RunInUse(EaselError):
    """Another run holds the folder's lock."""

    def __init__(self, folder: Path, holder: Holder | None, exclusive: bool = False):
        self.folder, self.holder = folder, holder
        who = holder.describe() if holder is not None else "a process that has not written its name yet"
        manual = (f" If that process is not running, delete {folder / LOCK_NAME}." if exclusive else "")
        super().__init__(f"the run folder {folder} is in use by another easel run ({who}). Two runs of one config would "
                         f"overwrite each other's saves: wait for it to finish, or stop it (Ctrl-C saves) and run again."
                         f"{manual}")


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no harmless probe elsewhere (os.kill terminates on Windows): never assume it is dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(text: str) -> Holder | None:
    try:
        return Holder(**json.loads(text))
    except (ValueError, TypeError):
        return None


def read_holder(folder: Path) -> Holder | None:
    """The holder named in ``folder``'s lock file (who holds it, or who held it last and died); None without one."""
    try:
        return _parse((Path(folder) / LOCK_NAME).read_text(encoding="utf-8"))
    except OSError:
        return None


def in_use(folder: Path) -> RunInUse | None:
    """The error a run opening ``folder`` would get now; None when it may start (no lock, or a dead holder's).

    For a queue deciding what to start and a page saying who holds a folder. It never takes the lock from
    anyone: a named holder's lock is probed with a shared flock (which its exclusive one refuses), and a file
    that names nobody yet is a run in the middle of taking it (or, once it is older, a run killed then).
    """
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = _read_fd(fd)
        if holder is not None and holder.dead_here():
            return None  # a killed run's lock: the next run takes it over
        if holder is None and time.time() - os.fstat(fd).st_mtime < FRESH:
            return RunInUse(Path(folder), None)
        held = _held_elsewhere(fd)
        if held is None:
            return RunInUse(Path(folder), holder, exclusive=True)
        return RunInUse(Path(folder), holder) if held else None
    finally:
        os.close(fd)


def _held_elsewhere(fd: int) -> bool | None:
    """Whether another open of the file holds it locked; None where flock is missing or refused."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as err:
        if err.errno in UNSUPPORTED:
            return None
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _flock(fd: int) -> bool | None:
    """Lock ``fd`` without waiting: True when locked, False when another process holds it, None when unsupported."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in UNSUPPORTED:
            return None
        raise
    return True


def _read_fd(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse(os.read(fd, 65536).decode("utf-8", errors="replace"))


def _write_fd(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(asdict(holder)) + "\n").encode("utf-8"))


def _open(path: Path) -> tuple[int | None, bool]:
    """(descriptor, whether this call created the file); (None, False) when it vanished between two tries."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), False
    except FileNotFoundError:
        return None, False


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (its last holder may have removed it after we opened it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class RunLock:
    """The held lock of one run folder; ``release`` gives it up and removes the file."""

    def __init__(self, path: Path, fd: int, previous: Holder | None):
        self.path = path
        self._fd: int | None = fd
        self.previous = previous
        """The holder of a stale lock this one took over (its process had ended without releasing it)."""

    @classmethod
    def acquire(cls, folder: Path) -> "RunLock":
        """Lock ``folder`` (which must exist) for this process.

        Raises:
            RunInUse: another live process holds it.
        """
        path, previous = Path(folder) / LOCK_NAME, None
        for _ in range(20):
            fd, created = _open(path)
            if fd is None:
                continue
            try:
                locked = _flock(fd)
                if locked is None:  # no flock here: the file's existence is the lock
                    if created:
                        _write_fd(fd, Holder.me())
                        return cls(path, fd, previous)
                    holder = _read_fd(fd)
                    if holder is None or not holder.dead_here():
                        raise RunInUse(Path(folder), holder, exclusive=True)
                    previous = holder
                    path.unlink(missing_ok=True)
                elif not locked:
                    raise RunInUse(Path(folder), _read_fd(fd))
                elif _same_file(fd, path):
                    previous = previous or _read_fd(fd)
                    _write_fd(fd, Holder.me())
                    return cls(path, fd, previous)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a stale file removed, or the holder removed it after we opened it: try the new one
        raise EaselError(f"could not lock {path}: other runs keep creating and removing it; run again.")

    def release(self) -> None:
        """Remove the lock file (while still holding it, so a waiting run retries on a fresh one) and unlock."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
