"""The run folder ``<training_folder>/<name>/`` (resolved config, log.txt, its lock) and atomic file writes.

Files are written through ``atomic_path`` / ``atomic_write``: the data goes to a hidden temp file
``.<name>.easel-XXXXXXXX.tmp`` beside the target, which replaces the target in one rename, so a crash, a
kill or a full disk never leaves a half-written file under the target's name. A full disk is one clear
error (``DiskFull``) saying the previous file is intact; the temp files of a run killed mid-write are
removed when the next run opens the folder (``clean_stale_temps``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from toolkit.errors import EaselError, is_disk_full
from toolkit.log import attach_file, detach, log
from toolkit.paths import safe_child
from toolkit.run_lock import RunLock

TEMP_PREFIX, TEMP_SUFFIX = ".easel-", ".tmp"
TEMP_PATTERN = re.compile(r"\..+\.easel-[a-z0-9_]{8}\.tmp")
"""Names of the temp files ``atomic_path`` makes (``tempfile.mkstemp`` adds 8 of [a-z0-9_]); no other file matches."""


class DiskFull(EaselError):
    """No space left on the device while writing ``target``; what was there before is untouched."""

    def __init__(self, target: Path, kept: str):
        self.target = target
        super().__init__(f"no space left on device at {target}; {kept}. Free space on that disk (or write elsewhere) "
                         "and run again.")


def _file_mode() -> int:
    """Permissions a plainly created file gets under the current umask (mkstemp makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _kept(target: Path) -> str:
    return f"the previous {target.name} is intact" if target.exists() else "nothing was written under that name"


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename.

    Raises:
        DiskFull: the disk filled up (the temp file is removed, ``target`` is as it was).
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}{TEMP_PREFIX}", suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(target, _kept(target)) from None
        raise
    os.close(fd)
    temp_path = Path(temp)
    try:
        yield temp_path
        os.chmod(temp_path, _file_mode())
        os.replace(temp_path, target)
    except Exception as err:
        if is_disk_full(err):
            raise DiskFull(target, _kept(target) + " (the partial file was removed)") from None
        raise
    finally:
        temp_path.unlink(missing_ok=True)


@contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """An open binary file whose contents replace ``target`` in one rename when the block ends without an error.

    Writers given a file object report a full disk as an OSError (given a path, torch.save does not).
    """
    with atomic_path(target) as temp:
        with open(temp, "wb") as handle:
            yield handle


def can_write(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or, while it does not exist, in its nearest existing parent).

    ``os.access`` sees permissions and read-only mounts; a probe file (unnamed where the system allows, removed at
    once) catches what it misses (ACLs, network filesystems that squash root, quotas).
    """
    target = Path(folder)
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        return False
    return _probe_write(target)


def _probe_write(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".easel-probe-"):
            return True
    except OSError:
        return False


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_write(target) as handle:
        handle.write(text.encode("utf-8"))


def append_text(target: Path, text: str) -> None:
    """Append ``text``; when the disk is full the file is cut back to what it held (no half line) and DiskFull raised."""
    data = memoryview(text.encode("utf-8"))
    start = None
    try:
        with open(target, "ab", buffering=0) as handle:
            start = handle.seek(0, os.SEEK_END)
            try:
                while data:
                    data = data[handle.write(data):]
            except OSError:
                handle.truncate(start)
                raise
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(target, "its earlier contents are intact" if start is not None else "nothing was written") from None
        raise


def clean_stale_temps(folder: Path, *, older_than: float = 0.0) -> list[Path]:
    """Remove the temp files ``atomic_path`` left in ``folder`` and below (a write cut short by a kill).

    Only files at least ``older_than`` seconds old: a folder other runs may be writing to (a shared cache)
    keeps their fresh ones. Returns the paths removed.
    """
    removed: list[Path] = []
    now = time.time()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if not TEMP_PATTERN.fullmatch(name):
                continue
            try:
                if now - path.lstat().st_mtime >= older_than:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # another cleaner was quicker
                continue
    return removed


def dump_yaml(data: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


def run_folder_path(root: Path | str, name: str) -> Path:
    """``<root>/<name>``, the run folder of the job named ``name`` (one safe path segment, see ``toolkit.paths``)."""
    return safe_child(Path(root), name, "config.name")


class RunFolder:
    """One run's folder. Opening it locks it, writes config.yaml and starts log.txt; a later run continues it.

    The lock (``toolkit.run_lock``) keeps a second run of the same config out while this one is open: its
    ``open`` raises ``RunInUse`` (exit 2) naming this process.
    """

    def __init__(self, root: Path | str, name: str | None = None):
        """``root/name`` (``name`` checked to be one safe segment); without ``name``, ``root`` itself (a folder
        the config names whole, such as the evaluate job's ``output_folder``)."""
        self.path = run_folder_path(root, name) if name is not None else Path(root)
        self._handler: logging.Handler | None = None
        self._lock: RunLock | None = None

    def open(self, resolved_config: dict[str, Any]) -> bool:
        """Lock and prepare the folder; returns True when it already held a run (which is then continued).

        Raises:
            RunInUse: another run has the folder open.
        """
        existed = (self.path / "config.yaml").is_file()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EaselError(f"cannot create the run folder {self.path}: {err.strerror or err}.") from None
        self._lock = RunLock.acquire(self.path)
        try:
            self._prepare(resolved_config, existed)
        except BaseException:
            self.close()
            raise
        return existed

    def _prepare(self, resolved_config: dict[str, Any], existed: bool) -> None:
        stale = clean_stale_temps(self.path)
        self._handler = attach_file(self.path / "log.txt")
        assert self._lock is not None
        if self._lock.previous is not None:
            log.warning(f"note: took over the lock of {self.path} left by {self._lock.previous.describe()}, which is "
                        "no longer running.")
        if stale:
            log.info(f"Removed {len(stale)} unfinished temp file(s) of an interrupted write: "
                     f"{', '.join(p.name for p in stale[:5])}{' ...' if len(stale) > 5 else ''}")
        text = dump_yaml(resolved_config)
        config_file = self.path / "config.yaml"
        if existed and config_file.read_text(encoding="utf-8") != text:
            kept = self._free_name(f"config.{time.strftime('%Y%m%d-%H%M%S')}", ".yaml")
            os.replace(config_file, kept)
            log.info(f"The config differs from the one this run started with; the old one is kept as {kept}.")
        write_text_atomic(config_file, text)
        if existed:
            log.info(f"Continuing the run in {self.path}.")

    def _free_name(self, stem: str, suffix: str) -> Path:
        """``stem + suffix`` in the folder, or with -2, -3, ... added: two changes within one second keep both."""
        candidate, number = self.path / f"{stem}{suffix}", 1
        while candidate.exists():
            number += 1
            candidate = self.path / f"{stem}-{number}{suffix}"
        return candidate

    def record(self, message: str, level: int = logging.ERROR) -> None:
        """Write a line to log.txt only (e.g. the error that ends the run, which run.py prints to the console)."""
        if self._handler is not None:
            self._handler.handle(logging.makeLogRecord({"name": log.name, "levelno": level,
                                                        "levelname": logging.getLevelName(level), "msg": message}))

    def close(self) -> None:
        """Stop writing log.txt and release the lock."""
        if self._handler is not None:
            detach(self._handler)
            self._handler = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
