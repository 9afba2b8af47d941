"""Finding LoRA files by name (A1111's ``<lora:name:w>``) and fitting image sizes to an architecture."""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import EaselError

LORA_SUFFIXES = (".safetensors",)


def index_loras(dirs: list[str]) -> dict[str, Path]:
    """Name (file stem, and path relative to its folder without suffix) -> file, over ``dirs`` and their subfolders."""
    found: dict[str, Path] = {}
    for folder in dirs:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise EaselError(f"generate.lora_dirs: '{folder}' is not a folder.")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in LORA_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
                found.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
    return found


def resolve_lora(name: str, index: dict[str, Path], dirs: list[str], where: str) -> Path:
    """A LoRA given as a path, or as a name looked up in ``lora_dirs``; unknown names list what was found."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    key = name[:-len(path.suffix)] if path.suffix.lower() in LORA_SUFFIXES else name
    if key in index:
        return index[key]
    names = sorted({p.stem for p in index.values()})
    searched = ", ".join(dirs) if dirs else "(no generate.lora_dirs given)"
    shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
    raise EaselError(f"{where}: LoRA '{name}' is not a file and not found in lora_dirs ({searched}). "
                     f"Found: {shown or 'none'}.")


def round_to(value: float, multiple: int) -> int:
    """Nearest multiple of ``multiple``, at least ``multiple``."""
    return max(multiple, int(round(value / multiple)) * multiple)


def fit_aspect(source: tuple[int, int], area: int, multiple: int) -> tuple[int, int]:
    """(width, height) with ``source``'s aspect ratio and about ``area`` pixels, sides rounded to ``multiple``."""
    width, height = source
    scale = (area / (width * height)) ** 0.5
    return round_to(width * scale, multiple), round_to(height * scale, multiple)
