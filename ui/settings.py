"""Where the UI reads and writes, where it listens, and who may talk to it (the token)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import EaselError

TOKEN_ENV = "EASEL_UI_TOKEN"
TOKEN_COOKIE = "easel_token"
STATE_FOLDER = ".easel-ui"
"""The UI's own files under the output folder: the queue database, job configs and their console logs."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """One UI server's configuration."""

    root: Path
    """The folder jobs run in (relative config paths resolve against it, as for ``python run.py``)."""
    output: Path
    """Training runs and generated images; the queue lives in ``<output>/.easel-ui/``."""
    datasets: Path
    """Dataset folders (one per subfolder)."""
    host: str = "127.0.0.1"
    port: int = 8675
    token: str | None = None
    """Required on every request when set (always set for a bind that is not loopback)."""
    generate_device: str = "auto"
    """Device of the generate worker."""

    @property
    def state(self) -> Path:
        return self.output / STATE_FOLDER

    @property
    def roots(self) -> dict[str, Path]:
        """The only folders whose files are served, by the name used in URLs."""
        return {"output": self.output, "datasets": self.datasets}

    def relative(self, path: Path) -> str:
        """``path`` as written into configs: relative to ``root`` when inside it (as a user would write it)."""
        try:
            return Path(os.path.relpath(path, self.root)).as_posix() if Path(path).resolve().is_relative_to(self.root.resolve()) else str(path)
        except ValueError:
            return str(path)

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the token (compared in constant time); always true without a token."""
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def choose_token(host: str, given: str | None) -> tuple[str | None, bool]:
    """The token for a bind to ``host`` and whether it was made up now (then it is printed at start).

    ``given`` (``--token``) wins, then ``$EASEL_UI_TOKEN``; a loopback bind needs none, any other gets a random one.
    """
    token = given or os.environ.get(TOKEN_ENV) or None
    if token is not None:
        if len(token) < 16:
            raise EaselError(f"the UI token must be at least 16 characters (got {len(token)}); "
                             f"use a long random string, or leave --token and ${TOKEN_ENV} unset to get one.")
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True
