"""The run folder ``<training_folder>/<name>/``: resolved config, log.txt, and atomic file writes."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from toolkit.log import attach_file, detach, log


def _file_mode() -> int:
    """Permissions a plainly created file gets under the current umask (mkstemp makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temp_path = Path(temp)
    try:
        yield temp_path
        os.chmod(temp_path, _file_mode())
        os.replace(temp_path, target)
    finally:
        if temp_path.exists():
            temp_path.unlink()


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
    with atomic_path(target) as temp:
        temp.write_text(text, encoding="utf-8")


def dump_yaml(data: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


class RunFolder:
    """One run's folder. Opening it writes config.yaml and starts log.txt; a second run continues it."""

    def __init__(self, root: Path, name: str):
        self.path = Path(root) / name
        self._handler = None

    def open(self, resolved_config: dict[str, Any]) -> bool:
        """Prepare the folder; returns True when it already held a run (which is then continued)."""
        existed = (self.path / "config.yaml").is_file()
        self.path.mkdir(parents=True, exist_ok=True)
        self._handler = attach_file(self.path / "log.txt")
        text = dump_yaml(resolved_config)
        config_file = self.path / "config.yaml"
        if existed and config_file.read_text(encoding="utf-8") != text:
            kept = self._free_name(f"config.{time.strftime('%Y%m%d-%H%M%S')}", ".yaml")
            os.replace(config_file, kept)
            log.info(f"The config differs from the one this run started with; the old one is kept as {kept}.")
        write_text_atomic(config_file, text)
        if existed:
            log.info(f"Continuing the run in {self.path}.")
        return existed

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
        if self._handler is not None:
            detach(self._handler)
            self._handler = None
