"""Configs of the dataset job's processes (``job: dataset``): filter, dedupe, resize, convert_captions, tag.

The processes run in the order listed. The first one reads ``input_folder``; each later one takes
the previous one's result (kept images with their captions); the last one writes ``output_folder``.
The input folder is never modified.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from toolkit.config.base import Block, CaptionExt, lowercase

CaptionFormat = lowercase(Literal["txt", "jsonl", "csv"])




class DatasetStepConfig(Block):
    """What every dataset process shares: where the chain starts and where results are written."""

    block_name: ClassVar[str] = "process[]"

    input_folder: str | None = None
    """Folder of images (subfolders included) with captions (.txt sidecars, metadata.jsonl or metadata.csv), read as training reads it. Only the first process sets it; later ones take the previous process's result."""
    output_folder: str | None = None
    """Write the result so far here (images, captions, report.json). The last process must set it; an earlier one may, to keep that stage. Must not be inside the input folder."""
    caption_ext: CaptionExt = "txt"
    """Extension of caption sidecar files, both read from ``input_folder`` and written to ``output_folder``."""


class FilterConfig(DatasetStepConfig):
    """Drop blurry, small and oddly shaped images (and unreadable files)."""

    type: Literal["filter"]
    """Process type."""
    blur_threshold: float | None = Field(None, ge=0)
    """Drop images whose sharpness is below this: the variance of the 3x3 Laplacian of the grayscale image, as OpenCV's ``cv2.Laplacian(gray, cv2.CV_64F).var()`` computes it (seed 003 used 100). Unset: no blur check."""
    min_size: int | None = Field(None, ge=1)
    """Drop images whose shorter side is below this many pixels."""
    min_aspect: float | None = Field(None, gt=0)
    """Drop images whose width / height is below this (e.g. 0.5 drops images more than twice as tall as wide)."""
    max_aspect: float | None = Field(None, gt=0)
    """Drop images whose width / height is above this (e.g. 2.0 drops images more than twice as wide as tall)."""

    @model_validator(mode="after")
    def _aspect_order(self) -> "FilterConfig":
        if self.min_aspect is not None and self.max_aspect is not None and self.min_aspect > self.max_aspect:
            raise ValueError(f"min_aspect ({self.min_aspect}) is above max_aspect ({self.max_aspect})")
        return self


class DedupeConfig(DatasetStepConfig):
    """Drop near-duplicate images, found by perceptual hash (a 64-bit DCT pHash)."""

    type: Literal["dedupe"]
    """Process type."""
    max_distance: int = Field(5, ge=0, le=64)
    """Two images whose hashes differ in at most this many of 64 bits are duplicates (0: visually identical; resized or recompressed copies are usually within 4)."""
    keep: lowercase(Literal["largest", "first"]) = "largest"  # type: ignore[valid-type]
    """Which image of a duplicate group stays: the one with the most pixels, or the first by file name."""


class ResizeConfig(DatasetStepConfig):
    """Resize images: a centered square crop, or a resize that keeps the aspect ratio (for aspect buckets)."""

    type: Literal["resize"]
    """Process type."""
    mode: lowercase(Literal["center_crop", "max_side"]) = "center_crop"  # type: ignore[valid-type]
    """center_crop: crop the largest centered square and resize it to ``size`` x ``size``; max_side: scale so the longer side is ``size``, keeping the aspect ratio."""
    size: int = Field(ge=8)
    """Target side in pixels (seed 003 used 512)."""
    upscale: bool = False
    """max_side: also enlarge images whose longer side is below ``size`` (center_crop always produces ``size`` x ``size``)."""
    resample: lowercase(Literal["lanczos", "bicubic", "bilinear", "nearest"]) = "lanczos"  # type: ignore[valid-type]
    """Resampling filter; ``nearest`` keeps pixel art crisp."""
    quality: int = Field(95, ge=1, le=100)
    """JPEG / WebP quality of rewritten images (the file format follows the file's extension)."""


class ConvertCaptionsConfig(DatasetStepConfig):
    """Choose the caption files written: .txt sidecars, metadata.jsonl and/or metadata.csv (file_name,text)."""

    type: Literal["convert_captions"]
    """Process type."""
    to: list[CaptionFormat] = Field(min_length=1)  # type: ignore[valid-type]
    """Formats written to the output folder: txt (one sidecar per image), jsonl and/or csv (Hugging Face imagefolder's metadata file with file_name and text)."""

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class TagConfig(DatasetStepConfig):
    """Add a trigger word or style tag to every caption, once."""

    type: Literal["tag"]
    """Process type."""
    text: str = Field(min_length=1)
    """The tag, e.g. ``wcstyle`` or ``drawn by KSH drawing style``. Captions that already contain it (as whole words, any case) are left as they are."""
    position: lowercase(Literal["prefix", "suffix"]) = "prefix"  # type: ignore[valid-type]
    """Put the tag at the start or at the end of the caption."""
    separator: str = ", "
    """Text between the tag and the caption."""

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the tag is empty")
        return value.strip()
