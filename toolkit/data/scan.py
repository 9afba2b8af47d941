"""Find the images and captions of a dataset folder, checking each image without a full decode.

Two layouts are read, and may be mixed:
- images with same-stem caption files (``caption_ext``), subfolders included;
- a ``metadata.jsonl`` or ``metadata.csv`` (the Hugging Face imagefolder layout) in the folder or a
  subfolder, with a ``file_name`` (or ``image``) column relative to that file's folder and a
  ``text`` (or ``caption``) column. Its text wins over a caption file of the same image.

``folder_path`` may also be a metadata .jsonl/.csv itself: its folder is then the dataset folder and its
rows the whole listing. A metadata file may only list images inside the dataset folder, unless the
dataset's ``allow_outside_files`` allows more.

Hidden files and folders (``.name``), the default cache folder (``_latent_cache``) and the configured
``cache_dir`` are not entered. An image without a caption (or with an empty one) gets
``default_caption``. Bad files (a symbolic link that loops or leads nowhere included) are skipped and
counted by reason. A caption file that is not valid UTF-8 is read with U+FFFD for its bad bytes, with a
warning naming it and the offset of its first bad byte.

``list_dataset`` and ``read_caption`` are the listing and caption rules themselves; the dataset
preparation jobs use them too, so they see the images and captions training sees.

Edit pairs (``control_path``): each image gets the image of the same stem (any image extension, the first of
``IMAGE_EXTENSIONS`` when several) from every control folder, in order, as ai-toolkit pairs them; an image
missing one, or whose reference cannot be read, is skipped and counted. Control folders inside the dataset
folder are not read as targets.
"""

from __future__ import annotations

import codecs
import errno
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
from toolkit.log import log

DEFAULT_CACHE_FOLDER = "_latent_cache"
METADATA_SUFFIXES = (".jsonl", ".csv")
LINK_PROBLEMS = ("symbolic link loop", "broken symbolic link")
"""Skip reasons of image names whose link leads nowhere."""
WARNED_FILES = 10
"""Bad caption encodings warned about one by one; the rest are counted in one line."""


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
    notes: dict[str, list[str]] = field(default_factory=dict)
    """What -> paths of files that are used, but not as they are (a caption with bad UTF-8, a cropped image)."""

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

    def note(self, path: Path, what: str, detail: str = "") -> None:
        """Record a file that is used with a problem."""
        self.notes.setdefault(what, []).append(_relative(path, self.folder) + (f" {detail}" if detail else ""))

    def skipped_summary(self, examples: int = 3) -> str:
        """``reason N (a.jpg, b.png, +2 more); ...`` for messages and reports."""
        return _summary(self.skipped, examples)

    def notes_summary(self, examples: int = 3) -> str:
        """``what N (a.txt at byte 5, ...); ...`` for reports."""
        return _summary(self.notes, examples)


def _summary(groups: dict[str, list[str]], examples: int) -> str:
    parts = []
    for reason, paths in sorted(groups.items()):
        shown = ", ".join(paths[:examples]) + (f", +{len(paths) - examples} more" if len(paths) > examples else "")
        parts.append(f"{reason} {len(paths)} ({shown})")
    return "; ".join(parts)


def dataset_location(folder_path: str | Path) -> tuple[Path, Path | None]:
    """(dataset folder, metadata file) of a ``folder_path``: a folder and None, or a metadata file's folder and the file."""
    path = Path(folder_path)
    if path.suffix.lower() in METADATA_SUFFIXES and path.is_file():
        return path.parent, path
    return path, None


def dataset_problem(folder_path: str) -> str | None:
    """Why ``folder_path`` cannot be read as a dataset (missing, or a file that is no metadata file); None when it can."""
    path = Path(folder_path)
    if path.is_dir() or dataset_location(path)[1] is not None:
        return None
    if path.is_file():
        return (f"'{folder_path}' is a file; point folder_path at a folder of images, or at a metadata "
                f"{'/'.join(METADATA_SUFFIXES)} file that lists them.")
    return (f"the dataset folder '{folder_path}' does not exist; point folder_path at a folder of images (with .txt "
            "captions or a metadata.jsonl), or at a metadata.jsonl/.csv.")


def cache_root(config: DatasetConfig) -> Path:
    """The folder that holds this dataset's latent and text caches."""
    return Path(config.cache_dir) if config.cache_dir else dataset_location(config.folder_path)[0] / DEFAULT_CACHE_FOLDER


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
        dirs[:] = [d for d in dirs if not d.startswith(".") and real_path(here / d) not in skip_dirs]
        found.extend(here / name for name in files if not name.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def real_path(path: Path) -> Path:
    """``path`` with links and '..' resolved; never raises (a looping link stays as it is)."""
    return Path(os.path.realpath(path))


def _metadata(files: list[Path], root: Path | None) -> dict[Path, str | None]:
    """Captions from every metadata file found; two in one folder is an error. With ``root``, listing a file
    outside it is too."""
    captions: dict[Path, str | None] = {}
    folders: dict[Path, Path] = {}
    for path in files:
        if path.name not in METADATA_FILES:
            continue
        if path.parent in folders:
            raise EaselError(f"{path.parent} holds both {folders[path.parent].name} and {path.name}; keep one of them.")
        folders[path.parent] = path
        captions.update(read_metadata(path, root))
    return captions


def caption_file(image: Path, caption_ext: str) -> Path:
    """The caption file of ``image``: same stem, extension ``caption_ext`` (without the dot)."""
    return image.with_suffix(f".{caption_ext}")


def read_text_file(path: Path) -> tuple[str, int | None]:
    """A caption file's text as UTF-8 (a byte order mark dropped), and the byte offset of its first invalid byte
    (None when it is valid); invalid bytes read as U+FFFD."""
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8"), None
    except UnicodeDecodeError as err:
        return data[start:].decode("utf-8", errors="replace"), start + err.start


def read_caption(image: Path, caption_ext: str, metadata: dict[Path, str | None],
                 bad_encoding: list[tuple[Path, int]] | None = None) -> tuple[str, str] | None:
    """(caption, source) of ``image``: its metadata text, else its caption file; None when both are missing or empty.

    Whitespace runs become one space. An empty metadata text does not hide a caption file. A caption file
    that is not valid UTF-8 is added to ``bad_encoding`` as (file, offset of its first bad byte).
    """
    text = _clean(metadata.get(real_path(image)))
    if text:
        return text, "metadata"
    path = caption_file(image, caption_ext)
    try:
        raw, bad = read_text_file(path)
    except OSError:  # no caption file (or an unreadable one): one bad caption never stops a run
        raw, bad = "", None
    if bad is not None and bad_encoding is not None:
        bad_encoding.append((path, bad))
    text = _clean(raw)
    return (text, "file") if text else None


def warn_bad_encoding(found: list[tuple[Path, int]]) -> None:
    """One warning per caption file that is not valid UTF-8 (the first few; then a count)."""
    for path, offset in found[:WARNED_FILES]:
        log.warning(f"warning: {path} is not valid UTF-8 (first bad byte at offset {offset}); it is read with U+FFFD "
                    "in place of the bad bytes. Save it as UTF-8 to train on its real text.")
    if len(found) > WARNED_FILES:
        log.warning(f"warning: {len(found) - WARNED_FILES} more caption files are not valid UTF-8 (see the dataset report).")


def _link_problem(path: Path) -> str | None:
    """Why a listed file cannot be opened because of a symbolic link (a loop, or a link to nothing); None otherwise."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return LINK_PROBLEMS[0]
        if path.is_symlink():
            return LINK_PROBLEMS[1]
    return None


def _candidates(files: list[Path], metadata: dict[Path, str | None]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files to probe (those found plus those the metadata lists), and (path, reason) of those left out."""
    skipped = [(p, f"unsupported format ({p.suffix.lower()})") for p in files if p.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS]
    images = []
    for path in (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS):
        problem = _link_problem(path)
        if problem:
            skipped.append((path, problem))
        else:
            images.append(path)
    known = {real_path(p) for p in images}
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


def list_dataset(folder: Path, skip_dirs: Iterable[Path] = (), *, metadata_file: Path | None = None,
                 allow_outside: bool = False) -> DatasetListing:
    """List ``folder`` by the rules of training's scan (the one listing that prep and captioning use too).

    ``<folder>/_latent_cache`` is always left out, so a reader that knows no ``cache_dir`` (prep, captioning)
    agrees with training; ``skip_dirs`` adds more (training's own ``cache_dir``). With ``metadata_file`` the
    listing is that file's rows alone. A metadata row naming a file outside ``folder`` is an error unless
    ``allow_outside``.
    """
    if metadata_file is not None:
        files = [metadata_file]
        metadata = read_metadata(metadata_file, None if allow_outside else folder)
        images, skipped = _candidates([], metadata)
        return DatasetListing(files, metadata, images, skipped)
    skip = {real_path(folder / DEFAULT_CACHE_FOLDER), *(real_path(Path(d)) for d in skip_dirs)}
    files = _walk(folder, skip)
    metadata = _metadata(files, None if allow_outside else folder)
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
    problem = dataset_problem(config.folder_path)
    if problem:
        raise EaselError(f"{problem} (datasets[].folder_path)")
    folder, metadata_file = dataset_location(config.folder_path)
    scan = DatasetScan(folder)
    controls = [(Path(c), control_images(Path(c))) for c in config.control_path]
    listing = list_dataset(folder, [cache_root(config), *(c for c, _ in controls)], metadata_file=metadata_file,
                           allow_outside=config.allow_outside_files)
    for path, reason in listing.skipped:
        scan.skip(path, reason)
    images, metadata = listing.images, listing.metadata
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_probe, images))
        wanted = sorted({found[p.stem] for _, found in controls for p in images if p.stem in found})
        probed = dict(zip(wanted, pool.map(_probe, wanted)))
    bad_encoding: list[tuple[Path, int]] = []
    for path, result in zip(images, results):
        if isinstance(result, BadImage):
            scan.skip(path, result.reason)
            continue
        references = _pair(scan, path, controls, probed.__getitem__)
        if references is None:
            continue
        found = read_caption(path, config.caption_ext, metadata, bad_encoding)
        caption, source = found or (_clean(config.default_caption), "default")
        scan.records.append(ImageRecord(path, result.width, result.height, caption, source, references))
    for caption_path, offset in bad_encoding:
        scan.note(caption_path, "caption not valid UTF-8 (read with U+FFFD)", f"at byte {offset}")
    warn_bad_encoding(bad_encoding)
    return scan
