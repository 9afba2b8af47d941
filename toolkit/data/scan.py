"""Find the images and captions of a dataset folder, without decoding any image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.config.blocks import DatasetConfig
from toolkit.data.images import IMAGE_EXTENSIONS
from toolkit.errors import EaselError


@dataclass
class DatasetScan:
    """What a dataset folder holds."""

    folder: Path
    images: list[Path] = field(default_factory=list)
    captions: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)


def scan_dataset(config: DatasetConfig) -> DatasetScan:
    """List images (subfolders included) and count same-stem caption files."""
    folder = Path(config.folder_path)
    if not folder.is_dir():
        raise EaselError(f"dataset folder '{folder}' does not exist (datasets[].folder_path). "
                         "Point folder_path at a folder of images with .txt captions.")
    scan = DatasetScan(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            scan.images.append(path)
            scan.captions += path.with_suffix(f".{config.caption_ext}").is_file()
    return scan
