"""Caption files in the three layouts a dataset may use, read and written.

- ``txt``: a sidecar per image, ``a/b.png`` -> ``a/b.txt`` (the extension is configurable);
- ``jsonl``: ``metadata.jsonl``, one ``{"file_name": "a/b.png", "text": "..."}`` per line;
- ``csv``: ``metadata.csv`` with a ``file_name,text`` header (quoted as CSV needs).

The metadata layouts are Hugging Face ``imagefolder``'s: ``file_name`` is relative to the folder
holding the metadata file. When reading, ``image`` is accepted for ``file_name`` and ``caption``
for ``text``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from toolkit.data.metadata import read_metadata as read_metadata_rows
from toolkit.errors import EaselError
from toolkit.output import write_text_atomic

METADATA_FILES = {"jsonl": "metadata.jsonl", "csv": "metadata.csv"}


def clean_caption(text: str) -> str:
    """Trim a caption read from a file (trailing newline, surrounding spaces)."""
    return text.strip()


def sidecar(image: Path, caption_ext: str) -> Path:
    """The caption file next to ``image``."""
    return image.with_suffix(f".{caption_ext}")


def read_sidecar(image: Path, caption_ext: str) -> str | None:
    """The caption of ``image`` from its sidecar, or None when there is none."""
    path = sidecar(image, caption_ext)
    if not path.is_file():
        return None
    try:
        return clean_caption(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise EaselError(f"cannot read caption file {path}: {err}. Save it as UTF-8 text.") from None


def read_metadata(meta: Path) -> dict[Path, str]:
    """Image path (absolute) -> caption ("" for a row without text), from metadata.jsonl / metadata.csv."""
    return {path: clean_caption(text) if text is not None else "" for path, text in read_metadata_rows(meta).items()}


def write_sidecars(folder: Path, captions: dict[str, str | None], caption_ext: str) -> None:
    """Write ``<stem>.<caption_ext>`` beside each image named (relative to ``folder``) that has a caption."""
    for name, caption in captions.items():
        if caption is not None:
            write_text_atomic(sidecar(folder / name, caption_ext), caption + "\n")


def metadata_text(captions: dict[str, str | None], kind: str) -> str:
    """The contents of metadata.jsonl (``kind`` jsonl) or metadata.csv (``kind`` csv)."""
    if kind == "jsonl":
        return "".join(json.dumps({"file_name": name, "text": caption or ""}, ensure_ascii=False) + "\n"
                       for name, caption in captions.items())
    stream = io.StringIO(newline="")
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["file_name", "text"])
    writer.writerows([name, caption or ""] for name, caption in captions.items())
    return stream.getvalue()


def write_captions(folder: Path, captions: dict[str, str | None], formats: list[str], caption_ext: str) -> None:
    """Write the captions of the images in ``folder`` (names relative to it) in each format."""
    for kind in formats:
        if kind == "txt":
            write_sidecars(folder, captions, caption_ext)
        else:
            write_text_atomic(folder / METADATA_FILES[kind], metadata_text(captions, kind))
