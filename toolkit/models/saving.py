"""The whole model as files (a merged LoRA's result): a diffusers folder, or one single-file checkpoint in the
architecture's original layout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.models.base import ModelAdapter


def save_folder(adapter: "ModelAdapter", folder: Path, dtype: str | None) -> None:
    """The model as a diffusers folder (``pipeline.save_pretrained``), in ``dtype`` when given."""
    from toolkit.devices import resolve_dtype

    pipe = adapter.pipeline()
    if dtype:
        pipe.to(dtype=resolve_dtype(dtype))
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder), safe_serialization=True)


def save_single_file(adapter: "ModelAdapter", path: Path, dtype: str | None) -> None:
    """The model as one .safetensors checkpoint in its original layout (the adapter's ``single_file_state_dict``)."""
    from safetensors.torch import save_file

    from toolkit.devices import resolve_dtype
    from toolkit.output import atomic_path

    tensors = {key: value.detach().to("cpu").contiguous() for key, value in adapter.single_file_state_dict().items()}
    if dtype:
        tensors = {key: value.to(resolve_dtype(dtype)) if value.is_floating_point() else value for key, value in tensors.items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp))
