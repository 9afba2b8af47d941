"""The one check for every path a user string reaches: names are single segments, joins stay under their root.

Run names, output folders, uploaded file names and the file names a metadata file lists all go through
here, so a string can never place a file outside the folder it belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.errors import EaselError


def segment_problem(name: str) -> str | None:
    """Why ``name`` is not one safe path segment, or None when it is."""
    if not name or not name.strip():
        return "is empty"
    if name in (".", ".."):
        return f"is '{name}', which names a folder, not a file"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\')"
    if any(ord(char) < 32 for char in name):
        return "contains a control character"
    if name != name.strip():
        return "starts or ends with whitespace"
    return None


def is_under(root: Path | str, path: Path | str, *, follow_links: bool = True) -> bool:
    """Whether ``path`` stays inside ``root`` once '..' and symbolic links are resolved.

    ``follow_links=False`` judges the names as written ('..' collapsed, links not followed): for paths a
    file lists, such as a metadata.jsonl's ``file_name``, where a link the user placed in the folder is theirs.
    """
    resolve = os.path.realpath if follow_links else os.path.abspath
    return Path(resolve(path)).is_relative_to(resolve(root))


def under(root: Path | str, *parts: str, what: str = "path") -> Path:
    """``root / parts``, refused with a clear error when it would leave ``root``."""
    root, relative = Path(root), Path(*parts)
    if relative.is_absolute():
        raise EaselError(f"the {what} '{relative}' is absolute; it must name a place inside {root}.")
    path = root / relative
    if not is_under(root, path):
        raise EaselError(f"the {what} '{relative}' leads outside {root}; use a name inside that folder.")
    return path


def safe_child(root: Path | str, name: str, what: str = "name") -> Path:
    """``root / name`` where ``name`` must be one safe segment (a run name, an uploaded file's name)."""
    problem = segment_problem(name)
    if problem is not None:
        raise EaselError(f"the {what} '{name}' {problem}.")
    return under(root, name, what=what)
