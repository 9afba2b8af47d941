"""Captions from Hugging Face imagefolder metadata files (metadata.jsonl / metadata.csv).

``file_name`` (or ``image``) is relative to the folder holding the file; ``text`` (or ``caption``)
is the caption. Used by the training data scan and by the dataset preparation tools. A reader may
confine the names to a root folder (the dataset's): a name leading out of it, as written, is an error.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from toolkit.errors import EaselError
from toolkit.paths import is_under

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FILE_COLUMNS = ("file_name", "image")
TEXT_COLUMNS = ("text", "caption")


def _rows(meta: Path) -> list[tuple[int, dict[str, object]]]:
    """(line number, row) pairs of a metadata.jsonl / metadata.csv file."""
    try:
        text = meta.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise EaselError(f"cannot read {meta}: {err}") from None
    if meta.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(reader.line_num, dict(row)) for row in reader]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EaselError(f"{meta}, line {number}: not valid JSON ({err.msg}). Each line must be one object "
                             'like {"file_name": "a.png", "text": "a caption"}.') from None
        if not isinstance(row, dict):
            raise EaselError(f"{meta}, line {number}: expected a JSON object, got {type(row).__name__}.")
        rows.append((number, row))
    return rows


def read_metadata(meta: Path, root: Path | None = None) -> dict[Path, str | None]:
    """Image path (resolved against the file's folder) -> caption text (None when the row has none).

    With ``root``, a name that leads outside it as written (``../x.png``, an absolute path) is an error;
    links inside the folder are the user's and are followed.
    """
    captions: dict[Path, str | None] = {}
    for number, row in _rows(meta):
        file_key = next((key for key in FILE_COLUMNS if row.get(key) not in (None, "")), None)
        if file_key is None:
            raise EaselError(f"{meta}, line {number}: no 'file_name' (or 'image') value; columns found: "
                             f"{', '.join(map(str, row)) or '(none)'}.")
        name = str(row[file_key])
        if root is not None and not is_under(root, meta.parent / name, follow_links=False):
            raise EaselError(f"{meta}, line {number}: '{name}' lies outside the dataset folder {root}, and a metadata file "
                             "lists only images inside it. Move the image into the folder, or let training read it where "
                             "it is with allow_outside_files: true on that dataset.")
        text_key = next((key for key in TEXT_COLUMNS if key in row), None)
        value = row.get(text_key) if text_key else None
        captions[Path(os.path.realpath(meta.parent / name))] = None if value is None else str(value)
    return captions
