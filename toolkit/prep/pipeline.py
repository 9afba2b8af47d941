"""The dataset being prepared: images with their captions, passed from step to step, and its folders.

The input is listed and its captions read by the training scan's own rules (``toolkit.data.scan``),
so the steps see exactly the images and captions a training run on that folder would.

A step never touches the input folder: it drops items (with a reason), changes captions in memory,
or writes new image files into a work folder. ``write_dataset`` materialises the result: images
are copied byte for byte unless a step rewrote them, captions are written in the chosen formats,
and ``report.json`` lists every input file as kept or dropped.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from toolkit.data.images import BadImage, load_image
from toolkit.data.scan import LINK_PROBLEMS, DatasetListing, caption_file, list_dataset, read_caption, warn_bad_encoding
from toolkit.errors import EaselError
from toolkit.paths import under
from toolkit.prep.captions import METADATA_FILES, write_captions

REPORT_FILE = "report.json"
MADE_BY = "easel dataset job"


@dataclass
class Item:
    """One image on its way through the steps."""

    name: str
    """Path relative to the dataset folder, with forward slashes (``sub/a.png``)."""
    path: Path
    """The file holding the image now: the input file, or a rewritten copy in the work folder."""
    caption: str | None
    measures: dict[str, Any] = field(default_factory=dict)
    """What the steps measured (size, sharpness, hash), reported in report.json."""


@dataclass
class Dropped:
    """An image a step removed, and why."""

    item: Item
    step: str
    reason: str
    detail: str = ""
    option: str | None = None
    """The step's setting that dropped it (``min_size``, ``max_distance``, ...), when one did."""


@dataclass
class DatasetState:
    """The images still in the set, those dropped, and the caption formats to write."""

    source: Path
    items: list[Item]
    caption_formats: list[str]
    work_dir: Path
    dropped: list[Dropped] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def drop(self, item: Item, step: str, reason: str, detail: str = "", option: str | None = None) -> None:
        self.dropped.append(Dropped(item, step, reason, detail, option))

    def open(self, item: Item, step: str) -> Image.Image | None:
        """Decode ``item``; an unreadable file is dropped (reason ``unreadable``) and None returned."""
        try:
            return load_image(item.path)
        except BadImage as err:
            self.drop(item, step, "unreadable", err.reason)
            return None


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` that training reads (``toolkit.data.scan.list_dataset``)."""
    return list_dataset(folder).images


def _name(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder``, with forward slashes; None outside it (a metadata row may point anywhere)."""
    for inner, outer in ((path, folder), (path.resolve(), folder.resolve())):
        if inner.is_relative_to(outer):
            return inner.relative_to(outer).as_posix()
    return None


def _formats(listing: DatasetListing, caption_ext: str) -> list[str]:
    """The caption formats the input has: txt when an image has a caption file, then each metadata file's kind."""
    names = {path.name for path in listing.files}
    txt = any(caption_file(path, caption_ext).is_file() for path in listing.images)
    return (["txt"] if txt else []) + [kind for kind, file_name in METADATA_FILES.items() if file_name in names]


def read_dataset(folder: Path, caption_ext: str, work_dir: Path) -> DatasetState:
    """Every image of ``folder`` with its caption, as training reads them (metadata text first, else the caption file).

    An image that cannot be copied into the output (a metadata row pointing outside the folder, a
    broken link) is dropped at once, with its reason in the report.
    """
    if not folder.is_dir():
        raise EaselError(f"input folder '{folder}' does not exist (input_folder of the first process).")
    listing = list_dataset(folder, allow_outside=True)  # such rows are dropped below, with their reason reported
    state = DatasetState(folder, [], _formats(listing, caption_ext), work_dir)
    bad_encoding: list[tuple[Path, int]] = []
    for path in listing.images:
        found = read_caption(path, caption_ext, listing.metadata, bad_encoding)
        name = _name(path, folder)
        item = Item(name or Path(os.path.relpath(path, folder.resolve())).as_posix(), path, found[0] if found else None)
        if name is None:
            state.drop(item, "read", "outside the input folder", "listed in a metadata file")
        elif not path.is_file():
            state.drop(item, "read", "unreadable", "missing file (broken link?)")
        else:
            state.items.append(item)
    for path, reason in listing.skipped:
        if reason in LINK_PROBLEMS:
            state.drop(Item(path.relative_to(folder).as_posix(), path, None), "read", "unreadable", reason)
    warn_bad_encoding(bad_encoding)
    return state


def check_folders(input_folder: Path, outputs: list[Path]) -> None:
    """Refuse outputs that would modify the input, or overwrite a folder easel did not make."""
    source = input_folder.resolve()
    for output in outputs:
        target = output.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise EaselError(f"output folder '{output}' overlaps the input folder '{input_folder}'; the input is never "
                             "modified, so write to a separate folder (e.g. a sibling named <input>_prepared).")
        if target.exists() and not target.is_dir():
            raise EaselError(f"output folder '{output}' is a file; choose a folder path.")
        if target.is_dir() and any(target.iterdir()) and not is_prepared_folder(target):
            raise EaselError(f"output folder '{output}' already holds files that a dataset job did not write; "
                             "choose a new folder or empty it first.")


def is_prepared_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the output of an earlier dataset job (safe to replace)."""
    try:
        return json.loads((folder / REPORT_FILE).read_text(encoding="utf-8")).get("made_by") == MADE_BY
    except (OSError, ValueError, AttributeError):
        return False


def build_report(state: DatasetState) -> dict[str, Any]:
    """Every input image, kept or dropped, with reasons and measures, plus a summary."""
    rows = [{"file": item.name, "status": "kept", "caption": item.caption, **({"measures": item.measures} if item.measures else {})}
            for item in state.items]
    rows += [{"file": d.item.name, "status": "dropped", "step": d.step, "reason": d.reason, "detail": d.detail,
              **({"measures": d.item.measures} if d.item.measures else {})} for d in state.dropped]
    rows.sort(key=lambda row: row["file"])
    reasons: dict[str, int] = {}
    for dropped in state.dropped:
        reasons[dropped.reason] = reasons.get(dropped.reason, 0) + 1
    summary = {"images": len(rows), "kept": len(state.items), "dropped": len(state.dropped), "dropped_by_reason": reasons}
    return {"made_by": MADE_BY, "input_folder": str(state.source), "steps": list(state.steps),
            "caption_formats": list(state.caption_formats), "summary": summary, "files": rows}


def write_dataset(state: DatasetState, folder: Path, caption_ext: str) -> dict[str, Any]:
    """Write the kept images, their captions and report.json to ``folder`` (replacing an earlier output)."""
    staging = folder.parent / f".{folder.name}.easel-writing"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for item in state.items:
        target = under(staging, item.name, what="image name")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item.path, target)
    formats = state.caption_formats or (["txt"] if any(item.caption is not None for item in state.items) else [])
    write_captions(staging, {item.name: item.caption for item in state.items}, formats, caption_ext)
    report = build_report(state)
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return report


def format_report(report: dict[str, Any], max_rows: int = 100) -> str:
    """A plain-text table of the report; beyond ``max_rows`` files only the dropped ones are listed."""
    rows = report["files"]
    if len(rows) > max_rows:
        rows = [row for row in rows if row["status"] == "dropped"][:max_rows]
    width = max([len(row["file"]) for row in rows] + [4])
    lines = [f"{'file':<{width}}  {'status':<7}  {'step':<18}  reason", "-" * (width + 40)]
    for row in rows:
        reason = f"{row.get('reason', '')} ({row['detail']})" if row.get("detail") else row.get("reason", "")
        lines.append(f"{row['file']:<{width}}  {row['status']:<7}  {row.get('step', ''):<18}  {reason}".rstrip())
    summary = report["summary"]
    by_reason = ", ".join(f"{count} {reason}" for reason, count in sorted(summary["dropped_by_reason"].items()))
    lines.append(f"kept {summary['kept']} of {summary['images']} images" + (f"; dropped {by_reason}" if by_reason else ""))
    if len(report["files"]) > max_rows:
        lines.append("(only dropped files are listed; every file is in report.json)")
    return "\n".join(lines)
