"""Dataset folders for the datasets page: listing, uploads, captions, trigger words, what training would skip.

A folder is read by training's own scan (``toolkit.data.scan``): the grid shows the images and captions training
would see, the "skipped" list is the scan's own reasons. Every name from a request goes through toolkit.paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import EaselError
from toolkit.paths import is_under, safe_child, under

CAPTION_EXT = "txt"
MAX_UPLOAD = 64 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One image of a folder and its caption as training reads it."""

    path: str
    """Relative to the folder (posix)."""
    caption: str
    source: str
    """``file``, ``metadata`` or ``none``."""


def folders(root: Path) -> list[tuple[str, int]]:
    """(name, image count) of each dataset folder under ``root``."""
    from toolkit.data.scan import list_dataset

    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        found.append((folder.name, len(list_dataset(folder).images)))
    return found


def folder_of(root: Path, name: str) -> Path:
    """The dataset folder ``name`` (one segment under ``root``); it must exist."""
    folder = safe_child(root, name, "dataset folder name")
    if not folder.is_dir():
        raise EaselError(f"there is no dataset folder '{name}' in {root}.")
    return folder


def create(root: Path, name: str) -> Path:
    folder = safe_child(root, name, "dataset folder name")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def items(folder: Path) -> list[Item]:
    """Every image of the listing with its caption (metadata first, then the caption file, as training reads)."""
    from toolkit.data.scan import list_dataset, read_caption

    listing = list_dataset(folder)
    out = []
    for image in listing.images:
        if not is_under(folder, image):
            continue  # a metadata file may list images elsewhere: the page shows only this folder's
        caption = read_caption(image, CAPTION_EXT, listing.metadata)
        text, source = caption if caption else ("", "none")
        out.append(Item(image.relative_to(folder).as_posix(), text, source))
    return out


def skipped(folder: Path) -> dict[str, list[str]]:
    """Reason -> files that training's scan of this folder drops (unreadable, unsupported, truncated, ...)."""
    from toolkit.config.blocks import DatasetConfig
    from toolkit.data.scan import scan_dataset

    return scan_dataset(DatasetConfig(folder_path=str(folder), caption_ext=CAPTION_EXT)).skipped


def _image(folder: Path, relative: str) -> Path:
    from toolkit.data.images import IMAGE_EXTENSIONS

    path = under(folder, relative, what="image")
    if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
        raise EaselError(f"'{relative}' is not an image of {folder.name}.")
    return path


def save_caption(folder: Path, relative: str, text: str) -> Path:
    """Write the caption file of one image; refused where a metadata file's caption would win over it."""
    from toolkit.data.scan import caption_file, list_dataset
    from toolkit.output import write_text_atomic

    image = _image(folder, relative)
    if list_dataset(folder).metadata.get(image.resolve()):
        raise EaselError(f"the caption of '{relative}' comes from a metadata file (metadata.jsonl / metadata.csv), which "
                         f"wins over caption files; edit it there.")
    target = caption_file(image, CAPTION_EXT)
    write_text_atomic(target, " ".join(text.split()) + "\n")
    return target


def upload(folder: Path, filename: str, data: bytes) -> Path:
    """Store an uploaded image (or a .txt caption) in ``folder``; refused unless it is one, with the reason."""
    from toolkit.data.images import IMAGE_EXTENSIONS, BadImage, probe_image
    from toolkit.output import atomic_path

    target = safe_child(folder, filename, "uploaded file name")
    suffix = target.suffix.lower()
    if len(data) > MAX_UPLOAD:
        raise EaselError(f"'{filename}' is {len(data) // 2**20} MiB; uploads are limited to {MAX_UPLOAD // 2**20} MiB.")
    if suffix == f".{CAPTION_EXT}":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise EaselError(f"'{filename}' is not UTF-8 text, so it cannot be a caption.") from None
    elif suffix not in IMAGE_EXTENSIONS:
        raise EaselError(f"'{filename}' is not an image: accepted are {', '.join(IMAGE_EXTENSIONS)} "
                         f"(and .{CAPTION_EXT} captions).")
    with atomic_path(target) as temp:
        temp.write_bytes(data)
        if suffix in IMAGE_EXTENSIONS:
            try:
                probe_image(temp)
            except BadImage as err:
                raise EaselError(f"'{filename}' is not a readable image ({err.reason}); it was not stored.") from None
    return target


def _replace_word(text: str, old: str, new: str) -> str:
    words = r"\s+".join(re.escape(word) for word in old.split())
    replaced = re.sub(r"(?<!\w)" + words + r"(?!\w)", new, text, flags=re.IGNORECASE)
    return " ".join(part for part in re.sub(r"\s*,\s*(,\s*)+", ", ", replaced).split()).strip(" ,")


def bulk_trigger(folder: Path, mode: str, word: str, old: str = "") -> int:
    """Add ``word`` to every caption (once, in front), or replace ``old`` with ``word``; returns the captions changed."""
    from toolkit.prep.tagging import add_tag

    if mode not in ("add", "replace"):
        raise EaselError(f"unknown trigger word action '{mode}'; use add or replace.")
    if mode == "replace" and not old.strip():
        raise EaselError("say which word to replace.")
    changed = 0
    for item in items(folder):
        if item.source == "metadata":
            continue
        text = add_tag(item.caption, word) if mode == "add" else _replace_word(item.caption, old, word)
        if text != item.caption:
            save_caption(folder, item.path, text)
            changed += 1
    return changed
