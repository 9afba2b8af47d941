"""Writing the captions of a prepared dataset in the three layouts a dataset may use.

- ``txt``: a sidecar per image, ``a/b.png`` -> ``a/b.txt`` (the extension is configurable);
- ``jsonl``: ``metadata.jsonl``, one ``{"file_name": "a/b.png", "text": "..."}`` per line;
- ``csv``: ``metadata.csv`` with a ``file_name,text`` header (quoted as CSV needs).

The metadata layouts are Hugging Face ``imagefolder``'s: ``file_name`` is relative to the folder
holding the metadata file. Reading is the training scan's (``toolkit.data.scan.read_caption``), so
a prepared dataset carries the captions training would have read from its input.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from toolkit.data.scan import caption_file
from toolkit.output import write_text_atomic
from toolkit.paths import under

METADATA_FILES = {"jsonl": "metadata.jsonl", "csv": "metadata.csv"}


def write_sidecars(folder: Path, captions: dict[str, str | None], caption_ext: str) -> None:
    """Write ``<stem>.<caption_ext>`` beside each image named (relative to ``folder``) that has a caption."""
    for name, caption in captions.items():
        if caption is not None:
            write_text_atomic(caption_file(under(folder, name, what="image name"), caption_ext), caption + "\n")


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
