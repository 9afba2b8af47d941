"""Saving the trained adapter: one function writes every LoRA file, and the run's save files are named here.

Files of run ``name`` in its run folder: ``<name>_<step:09d>.safetensors`` every ``save_every`` steps (the
newest ``max_step_saves_to_keep`` are kept), the final ``<name>.safetensors``, and beside each of them the
training state (``toolkit.train.state``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.output import atomic_path
from toolkit.train.state import STATE_SUFFIX, list_states

if TYPE_CHECKING:
    import torch

    from toolkit.network.network import Network

LORA_FORMAT = "easel-canonical"


def save_lora(network: "Network", path: Path, metadata: dict[str, str], dtype: "torch.dtype") -> None:
    """Write the network's weights (canonical keys, see toolkit.network.network) to ``path`` atomically.

    This is the one place LoRA files are written; the LoRA-format converters hook in here.
    """
    from safetensors.torch import save_file

    tensors = {key: value.detach().to("cpu", dtype).contiguous() for key, value in network.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata={"format": "pt", "easel_format": LORA_FORMAT, **metadata})


def lora_metadata(*, name: str, base_model: str, arch: str, network: Any, trigger_word: str | None, step: int,
                  resolution: list[int], images: int, config: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, str]:
    """The facts written into each LoRA file's header (all values are strings)."""
    fields: dict[str, Any] = {
        "name": name, "base_model": base_model, "arch": arch,
        "network_type": network.type, "network_rank": network.linear, "network_alpha": network.linear_alpha,
        "network_conv_rank": network.conv, "network_conv_alpha": network.conv_alpha,
        "trigger_word": trigger_word, "steps": step, "resolution": json.dumps(resolution),
        "num_train_images": images, "config": json.dumps(config, sort_keys=True, default=str),
    }
    if meta:
        fields["meta"] = json.dumps(meta, sort_keys=True, default=str)
    return {key: str(value) for key, value in fields.items() if value is not None}


class SaveFiles:
    """Names and pruning of one run's LoRA and state files."""

    def __init__(self, folder: Path, name: str, keep: int):
        self.folder = folder
        self.name = name
        self.keep = keep

    def step_lora(self, step: int) -> Path:
        return self.folder / f"{self.name}_{step:09d}.safetensors"

    @property
    def final_lora(self) -> Path:
        return self.folder / f"{self.name}.safetensors"

    def step_loras(self) -> list[tuple[int, Path]]:
        pattern = re.compile(rf"{re.escape(self.name)}_(\d{{9}})\.safetensors")
        found = [(int(m.group(1)), p) for p in self.folder.glob(f"{self.name}_*.safetensors")
                 if (m := pattern.fullmatch(p.name))]
        return sorted(found)

    def prune(self) -> list[Path]:
        """Keep the newest ``keep`` numbered LoRAs with their states, and the newest state; returns what was deleted."""
        if self.keep <= 0:
            return []
        lora_steps = [step for step, _ in self.step_loras()]
        state_steps = [step for step, _ in list_states(self.folder, self.name)]
        doomed = set(lora_steps[:-self.keep])
        doomed |= {step for step in state_steps[:-1] if step not in lora_steps}
        removed = []
        for step in sorted(doomed):
            for path in (self.step_lora(step), self.folder / f"{self.name}_{step:09d}{STATE_SUFFIX}"):
                if path.exists():
                    path.unlink()
                    removed.append(path)
        return removed
