"""Stacks of LoRA files applied while generating: h = W x + sum_i w_i B_i A_i x.

For now diffusers' own loader does the work (``load_lora_weights`` with one adapter name per file,
then ``set_adapters`` with the weights); it reads diffusers, kohya and most ComfyUI key layouts.
The LoRA file formats issue will route this through ``toolkit/lora_io``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError

if TYPE_CHECKING:
    from toolkit.models.base import ModelAdapter

PREFIX = "easel_gen_"
"""Adapter names used here, so other adapters on the model (a LoRA being trained) are left alone."""


def merge_duplicates(loras: list[tuple[str | Path, float]]) -> list[tuple[Path, float]]:
    """One entry per file, weights of repeated files summed (the update is linear in the weight)."""
    merged: dict[Path, float] = {}
    for path, weight in loras:
        key = Path(path).expanduser().resolve()
        merged[key] = merged.get(key, 0.0) + float(weight)
    return list(merged.items())


def apply_loras(adapter: "ModelAdapter", loras: list[tuple[str | Path, float]]) -> list[str]:
    """Load the LoRA files into the adapter's modules and activate them with their weights; returns adapter names."""
    remove_loras(adapter)
    entries = merge_duplicates(loras)
    if not entries:
        return []
    pipe = adapter.pipeline()
    names = []
    for index, (path, _) in enumerate(entries):
        if not path.is_file():
            raise EaselError(f"LoRA file '{path}' does not exist.")
        name = f"{PREFIX}{index}"
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                pipe.load_lora_weights(str(path), adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as err:
            remove_loras(adapter)
            raise EaselError(f"LoRA '{path}' does not fit this {adapter.arch.spec.name} model: {str(err).splitlines()[0]}") from err
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[weight for _, weight in entries])
    return names


def loaded_loras(pipe: Any) -> list[str]:
    """Names of the adapters ``apply_loras`` loaded into the pipeline's modules."""
    found: set[str] = set()
    for names in pipe.get_list_adapters().values():
        found.update(name for name in names if name.startswith(PREFIX))
    return sorted(found)


def remove_loras(adapter: "ModelAdapter") -> None:
    """Unload every LoRA ``apply_loras`` loaded; the base weights are untouched."""
    pipe = adapter.pipeline()
    names = loaded_loras(pipe)
    if names:
        pipe.delete_adapters(names)
