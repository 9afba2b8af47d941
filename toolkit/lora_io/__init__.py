"""LoRA files every tool loads: formats (kohya, comfy, diffusers/PEFT), conversion, loading, merging, resizing.

The one in-memory layout is easel's canonical state dict (see ``keys``). Public entry points:

- ``save_lora(state_dict, path, arch=, format=, metadata=, dtype=)``: what the trainer calls;
- ``load_lora(path, arch=, adapter=) -> LoraFile``: any supported layout, checked against a model when given;
- ``apply_loras(adapter, [(path, weight), ...])`` / ``remove_loras(adapter)`` / ``bake_loras``: LoRA stacks;
- ``ops``: concat and SVD merges of LoRAs, rank resize.

Heavy libraries (torch, safetensors, peft, lycoris, diffusers) are imported inside the functions.
"""

from toolkit.lora_io.apply import apply_loras, bake_loras, loaded_loras, merge_duplicates, remove_loras
from toolkit.lora_io.files import LoraFile, load_lora, save_lora
from toolkit.lora_io.formats import FORMATS

__all__ = ["FORMATS", "LoraFile", "apply_loras", "bake_loras", "load_lora", "loaded_loras", "merge_duplicates",
           "remove_loras", "save_lora"]
