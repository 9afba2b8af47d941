"""Serving files: only under the configured roots (output, datasets), every path checked by toolkit.paths."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from toolkit.errors import EaselError
from toolkit.paths import is_under, under
from ui.settings import Settings


def file_url(settings: Settings, path: Path) -> str | None:
    """The URL that serves ``path``, or None when it lies outside every served root."""
    for name, root in settings.roots.items():
        if is_under(root, path):
            relative = Path(os.path.relpath(os.path.realpath(path), os.path.realpath(root))).as_posix()
            return f"/files/{name}/" + quote(relative) if relative != "." else f"/files/{name}"
    return None


def served_path(settings: Settings, root: str, relative: str) -> Path | None:
    """The file a ``/files/<root>/<relative>`` URL names, or None (unknown root, outside it, hidden, not a file)."""
    folder = settings.roots.get(root)
    if folder is None or any(part.startswith(".") for part in Path(relative).parts):
        return None
    try:
        path = under(folder, relative, what="file")
    except EaselError:  # an absolute path, or one leading outside: not served
        return None
    return path if path.is_file() else None
