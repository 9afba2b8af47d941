"""Errors a user can fix: printed as one paragraph, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Sequence

Path = tuple[str | int, ...]


class EaselError(Exception):
    """An error caused by input the user controls (a config, a dataset, a file)."""

    exit_code = 2


def format_path(path: Path) -> str:
    """Render a YAML path like ``config.process[0].network.linear``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<top level>"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, with where it is."""

    path: Path
    message: str
    line: int | None = None
    column: int | None = None

    def render(self) -> str:
        where = f"line {self.line}, col {self.column}: " if self.line else ""
        what = f"{format_path(self.path)}: " if self.path else ""
        return f"{where}{what}{self.message}"


class ConfigError(EaselError):
    """All problems found in one config file, reported together."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue], hint: str = ""):
        self.source = source
        self.issues = list(issues)
        self.hint = hint or "Fix the config and run again; `python run.py --dry-run CONFIG` checks it without loading a model."
        count = len(self.issues)
        head = f"{source}: {count} problem{'s' if count != 1 else ''} in the config."
        body = "\n".join(f"  - {issue.render()}" for issue in self.issues)
        super().__init__(f"{head}\n{body}\n{self.hint}")

    @classmethod
    def combine(cls, source: str, errors: Sequence["ConfigError"]) -> "ConfigError":
        """One error holding every issue of ``errors``, their different hints in order."""
        return cls(source, [issue for error in errors for issue in error.issues],
                   " ".join(dict.fromkeys(error.hint for error in errors)))


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28")


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error``, or one it was raised from, is a full disk (or quota).

    Libraries that write in C or Rust (safetensors, torch.save) report it as their own error type, with
    the OS error as its context or only in the text.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(error) for text in NO_SPACE_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


class Interrupted(BaseException):
    """SIGTERM (or another stop signal) arrived; exit with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum
