"""Find the images and captions of a dataset folder, checking each image without a full decode.

Two layouts are read, and may be mixed:
- images with same-stem caption files (``caption_ext``), subfolders included;
- a ``metadata.jsonl`` or ``metadata.csv`` (the Hugging Face imagefolder layout) in the folder or a
  subfolder, with a ``file_name`` (or ``image``) column relative to that file's folder and a
  ``text`` (or ``caption``) column. Its text wins over a caption file of the same image.

Hidden files and folders (``.name``), the default cache folder (``_latent_cache``) and the configured
``cache_dir`` are not entered. An image without a caption (or with an empty one) gets
``default_caption``. Bad files are skipped and counted by reason.

``list_dataset`` and ``read_caption`` are the listing and caption rules themselves; the dataset
preparation jobs use them too, so they see the images and captions training sees.

Edit pairs (``control_path``): each image gets the image of the same stem (any image extension, the first of
``IMAGE_EXTENSIONS`` when several) from every control folder, in order, as ai-toolkit pairs them; an image
missing one, or whose reference cannot be read, is skipped and counted. Control folders inside the dataset
folder are not read as targets.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.config.blocks import DatasetConfig
from toolkit.data.images import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS, BadImage, ImageHeader, probe_image
from toolkit.data.metadata import METADATA_FILES, read_metadata
from toolkit.errors import EaselError

DEFAULT_CACHE_FOLDER = "_latent_cache"


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: where it is, its EXIF-oriented size, and its raw caption."""

    path: Path
    width: int
    height: int
    caption: str
    caption_source: str
    """Where the caption came from: ``file``, ``metadata`` or ``default``."""
    references: tuple["Reference", ...] = ()
    """Its reference images (edit pairs), one per ``control_path`` folder, in order."""


@dataclass(frozen=True)
class Reference:
    """A reference image of an edit pair, with its EXIF-oriented size."""

    path: Path
    width: int
    height: int


@dataclass
class DatasetScan:
    """What a dataset folder holds."""

    folder: Path
    records: list[ImageRecord] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Reason -> paths (relative to the folder) of the files that were dropped."""

    @property
    def images(self) -> list[Path]:
        """Paths of the usable images."""
        return [record.path for record in self.records]

    @property
    def captions(self) -> int:
        """How many usable images have a caption of their own (file or metadata)."""
        return sum(record.caption_source != "default" for record in self.records)

    def skip(self, path: Path, reason: str) -> None:
        """Record a dropped file."""
        self.skipped.setdefault(reason, []).append(_relative(path, self.folder))

    def skipped_summary(self, examples: int = 3) -> str:
        """``reason N (a.jpg, b.png, +2 more); ...`` for messages and reports."""
        parts = []
        for reason, paths in sorted(self.skipped.items()):
            shown = ", ".join(paths[:examples]) + (f", +{len(paths) - examples} more" if len(paths) > examples else "")
            parts.append(f"{reason} {len(paths)} ({shown})")
        return "; ".join(parts)


def cache_root(config: DatasetConfig) -> Path:
    """The folder that holds this dataset's latent and text caches."""
    return Path(config.cache_dir) if config.cache_dir else Path(config.folder_path) / DEFAULT_CACHE_FOLDER


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _walk(folder: Path, skip_dirs: set[Path]) -> list[Path]:
    """Every file under ``folder``, hidden folders and ``skip_dirs`` left out, sorted by relative path."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip_dirs]
        found.extend(here / name for name in files if not name.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _metadata(files: list[Path]) -> dict[Path, str | None]:
    """Captions from every metadata file found; two in one folder is an error."""
    captions: dict[Path, str | None] = {}
    folders: dict[Path, Path] = {}
    for path in files:
        if path.name not in METADATA_FILES:
            continue
        if path.parent in folders:
            raise EaselError(f"{path.parent} holds both {folders[path.parent].name} and {path.name}; keep one of them.")
        folders[path.parent] = path
        captions.update(read_metadata(path))
    return captions


def caption_file(image: Path, caption_ext: str) -> Path:
    """The caption file of ``image``: same stem, extension ``caption_ext`` (without the dot)."""
    return image.with_suffix(f".{caption_ext}")


def read_caption(image: Path, caption_ext: str, metadata: dict[Path, str | None]) -> tuple[str, str] | None:
    """(caption, source) of ``image``: its metadata text, else its caption file; None when both are missing or empty.

    Whitespace runs become one space. An empty metadata text does not hide a caption file.
    """
    text = _clean(metadata.get(image.resolve()))
    if text:
        return text, "metadata"
    try:
        text = _clean(caption_file(image, caption_ext).read_text(encoding="utf-8-sig", errors="replace"))
    except OSError:  # no caption file (or an unreadable one): one bad caption never stops a run
        text = ""
    return (text, "file") if text else None


def _candidates(files: list[Path], metadata: dict[Path, str | None]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files to probe (those found plus those the metadata lists), and (path, reason) of those left out."""
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = [(p, f"unsupported format ({p.suffix.lower()})") for p in files if p.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS]
    known = {p.resolve() for p in images}
    for listed in sorted(metadata, key=str):
        if listed in known:
            continue
        if not listed.is_file():
            skipped.append((listed, "listed in metadata, file missing"))
        elif listed.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((listed, f"unsupported format ({listed.suffix.lower() or 'no extension'})"))
        else:
            images.append(listed)
            known.add(listed)
    return images, skipped


@dataclass(frozen=True)
class DatasetListing:
    """What a dataset folder holds, before any image is opened."""

    files: list[Path]
    """Every file read (hidden ones and skipped folders left out), sorted by relative path."""
    metadata: dict[Path, str | None]
    """Resolved image path -> text, from every metadata.jsonl / metadata.csv found."""
    images: list[Path]
    """Image files: those found, then those only a metadata file lists (which may lie anywhere)."""
    skipped: list[tuple[Path, str]]
    """(path, reason) of files that look like images but cannot be used: unsupported format, missing."""


def list_dataset(folder: Path, skip_dirs: Iterable[Path] = ()) -> DatasetListing:
    """List ``folder`` by the rules of training's scan (the one listing that prep and captioning use too).

    ``<folder>/_latent_cache`` is always left out, so a reader that knows no ``cache_dir`` (prep, captioning)
    agrees with training; ``skip_dirs`` adds more (training's own ``cache_dir``).
    """
    skip = {(folder / DEFAULT_CACHE_FOLDER).resolve(), *(Path(d).resolve() for d in skip_dirs)}
    files = _walk(folder, skip)
    metadata = _metadata(files)
    images, skipped = _candidates(files, metadata)
    return DatasetListing(files, metadata, images, skipped)


def _probe(path: Path) -> ImageHeader | BadImage:
    try:
        return probe_image(path)
    except BadImage as err:
        return err


def control_images(folder: Path) -> dict[str, Path]:
    """Stem -> reference image of a control folder (top level only; the first of IMAGE_EXTENSIONS for a stem)."""
    if not folder.is_dir():
        raise EaselError(f"control folder '{folder}' does not exist (datasets[].control_path). Point control_path at the "
                         "folder of reference images, named like their targets.")
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in rank and not p.name.startswith(".")):
        known = found.get(path.stem)
        if known is None or rank[path.suffix.lower()] < rank[known.suffix.lower()]:
            found[path.stem] = path
    return found


def _pair(scan: DatasetScan, path: Path, controls: list[tuple[Path, dict[str, Path]]],
          probe: Callable[[Path], ImageHeader | BadImage]) -> tuple[Reference, ...] | None:
    """The references of target ``path``, one per control folder; None (and the target skipped) when one is missing."""
    references = []
    for folder, images in controls:
        found = images.get(path.stem)
        if found is None:
            scan.skip(path, f"no reference image in {folder}")
            return None
        header = probe(found)
        if isinstance(header, BadImage):
            scan.skip(path, f"reference image {header.reason}")
            return None
        references.append(Reference(found, header.width, header.height))
    return tuple(references)


def scan_dataset(config: DatasetConfig, *, workers: int | None = None) -> DatasetScan:
    """List the usable images of a dataset with their sizes, raw captions and references; count what was dropped."""
    folder = Path(config.folder_path)
    if not folder.is_dir():
        raise EaselError(f"dataset folder '{folder}' does not exist (datasets[].folder_path). "
                         "Point folder_path at a folder of images with .txt captions (or a metadata.jsonl).")
    scan = DatasetScan(folder)
    controls = [(Path(c), control_images(Path(c))) for c in config.control_path]
    listing = list_dataset(folder, [cache_root(config), *(c for c, _ in controls)])
    for path, reason in listing.skipped:
        scan.skip(path, reason)
    images, metadata = listing.images, listing.metadata
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_probe, images))
        wanted = sorted({found[p.stem] for _, found in controls for p in images if p.stem in found})
        probed = dict(zip(wanted, pool.map(_probe, wanted)))
    for path, result in zip(images, results):
        if isinstance(result, BadImage):
            scan.skip(path, result.reason)
            continue
        references = _pair(scan, path, controls, probed.__getitem__)
        if references is None:
            continue
        caption, source = read_caption(path, config.caption_ext, metadata) or (_clean(config.default_caption), "default")
        scan.records.append(ImageRecord(path, result.width, result.height, caption, source, references))
    return scan
