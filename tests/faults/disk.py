"""A disk that fills up: a real small tmpfs where this machine lets the tests mount one, else a write hook.

The hook replaces ``open`` inside ``toolkit.output`` (where every atomic write and append opens its file) with
one whose files raise ``OSError(ENOSPC)`` once a byte budget is spent, as a full file system does.
"""

from __future__ import annotations

import builtins
import errno
import io
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class Budget:
    """Bytes left on the pretend disk."""

    def __init__(self, left: int):
        self.left = left


class _Filling(io.RawIOBase):
    """A writable file that stops with ENOSPC when the budget runs out (after writing what still fitted)."""

    def __init__(self, raw: Any, budget: Budget):
        self.raw, self.budget = raw, budget

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        if self.budget.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.raw.write(data[: self.budget.left])
        self.budget.left -= written
        return written

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.raw.truncate(size)

    def close(self) -> None:
        self.raw.close()
        super().close()


def fill_after(monkeypatch: Any, budget: Budget) -> None:
    """Make ``toolkit.output``'s writes fail with ENOSPC once ``budget`` bytes are written."""
    import toolkit.output

    def filling_open(file: Any, mode: str = "r", buffering: int = -1, **kwargs: Any) -> Any:
        raw = builtins.open(file, mode, buffering=0)
        wrapped = _Filling(raw, budget)
        return wrapped if buffering == 0 else io.BufferedWriter(wrapped)

    monkeypatch.setattr(toolkit.output, "open", filling_open, raising=False)


@contextmanager
def small_tmpfs(folder: Path, size: str = "2m") -> Iterator[Path | None]:
    """``folder`` as a tmpfs of ``size``, unmounted afterwards; None where mounting is not allowed (not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_up(folder: Path) -> Path:
    """Write a filler file in ``folder`` until its file system is full; returns it (delete it to free the space)."""
    filler = folder / "filler.bin"
    with builtins.open(filler, "wb", buffering=0) as handle:
        chunk = b"\0" * 65536
        while True:
            try:
                handle.write(chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]
