"""Saving the trained adapter: one function writes every LoRA file, and the run's save files are named here.

Files of run ``name`` in its run folder: ``<name>_<step:09d>.safetensors`` every ``save_every`` steps (the
newest ``max_step_saves_to_keep`` are kept), the final ``<name>.safetensors``, and beside each of them the
training state (``toolkit.train.state``).

Every save is checked before it replaces anything: a LoRA whose tensors are not finite in the dtype it is
stored in (fp16 overflow included) is refused, and so is a full disk; either stops the run with the last
good save named (``SaveFiles.guard``). Every file saved is therefore finite, so the last one is good.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from toolkit.errors import EaselError
from toolkit.paths import safe_child
from toolkit.train.state import list_states, state_path

if TYPE_CHECKING:

    from toolkit.network.network import Network

def save_lora(network: "Network", path: Path, *, arch: Any, format: str | None, metadata: dict[str, Any], dtype: str,
              adapter: Any = None) -> None:
    """Write the network's weights to ``path`` atomically, in ``format`` (default: the architecture's).

    The one place the trainer writes LoRA files; the layouts (kohya, comfy, diffusers, peft) and the
    header fields other tools read are toolkit.lora_io's. ``adapter``: the trained model, whose own layout the
    denoiser's file names follow (an SDXL-family UNet laid out unlike SDXL base).
    """
    from toolkit.lora_io import save_lora as write_lora

    tensors = {key: value.detach().to("cpu") for key, value in network.state_dict().items()}
    write_lora(tensors, path, arch=arch, format=format, metadata=metadata, dtype=dtype, adapter=adapter)


def save_merged(load_model: Any, model: Any, arch: Any, network: "Network", path: Path, save: Any, strength: float) -> Path:
    """``train.merge_network_on_save``: a fresh copy of the base model (loaded on the CPU) with the network merged in at
    ``strength``, written as ``save.save_format`` (one .safetensors checkpoint at ``path``, or a diffusers folder beside
    it); the training keeps its own model and adapter. Returns what was written."""
    import torch

    from toolkit.devices import resolve_dtype
    from toolkit.lora_io.apply import bake_loras
    from toolkit.lora_io.files import LoraFile
    from toolkit.models.saving import save_folder, save_single_file

    lora = LoraFile.from_state_dict({key: value.detach().to("cpu", torch.float32) for key, value in network.state_dict().items()},
                                    arch.name)
    base = load_model(model, arch, device=torch.device("cpu"), dtype=resolve_dtype("fp32"))
    bake_loras(base, [(lora, strength)])
    if save.save_format == "diffusers":
        target = path.with_suffix("")
        save_folder(base, target, save.dtype)
    else:
        target = path
        save_single_file(base, target, save.dtype)
    return target


def lora_metadata(*, name: str, base_model: str, network: Any, train: Any, trigger_word: str | None, step: int,
                  resolution: list[int], images: int, tag_frequency: dict[str, dict[str, int]], prediction_type: str,
                  config: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts written into each LoRA file's header (keys as toolkit.lora_io.metadata.KNOWN_KEYS)."""
    fields: dict[str, Any] = {
        "name": name, "base_model": base_model, "trigger_word": trigger_word, "steps": step,
        "resolution": resolution, "num_train_images": images, "tag_frequency": tag_frequency,
        "prediction_type": prediction_type, "network_type": network.type, "rank": network.linear,
        "alpha": network.linear_alpha, "conv_rank": network.conv, "conv_alpha": network.conv_alpha,
        "dropout": network.dropout, "learning_rate": train.lr, "unet_lr": train.unet_lr,
        "text_encoder_lr": train.text_encoder_lr, "optimizer": train.optimizer, "lr_scheduler": train.lr_scheduler,
        "seed": train.seed, "config": config,
    }
    for key in ("description", "author", "license", "tags", "version"):
        if meta and meta.get(key):
            fields[key] = meta[key]
    return {key: value for key, value in fields.items() if value is not None}


def tag_frequency(captions_by_dataset: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """kohya's ``ss_tag_frequency``: per dataset folder name, how often each comma-separated tag occurs."""
    out: dict[str, dict[str, int]] = {}
    for dataset, captions in captions_by_dataset.items():
        counts: dict[str, int] = {}
        for caption in captions:
            for tag in (part.strip() for part in caption.split(",")):
                if tag:
                    counts[tag] = counts.get(tag, 0) + 1
        out[dataset] = counts
    return out


class SaveFiles:
    """Names and pruning of one run's LoRA and state files."""

    def __init__(self, folder: Path, name: str, keep: int):
        self.folder = folder
        self.name = name
        self.keep = keep

    def step_lora(self, step: int) -> Path:
        return safe_child(self.folder, f"{self.name}_{step:09d}.safetensors", "save file name")

    @property
    def final_lora(self) -> Path:
        return safe_child(self.folder, f"{self.name}.safetensors", "save file name")

    def step_loras(self) -> list[tuple[int, Path]]:
        pattern = re.compile(rf"{re.escape(self.name)}_(\d{{9}})\.safetensors")
        found = [(int(m.group(1)), p) for p in self.folder.glob(f"{self.name}_*.safetensors")
                 if (m := pattern.fullmatch(p.name))]
        return sorted(found)

    def last_good(self) -> str:
        """``the last good save is <file>`` (the newest LoRA saved; every save was checked), or that there is none."""
        kept = self.step_loras()
        return f"the last good save is {kept[-1][1]}" if kept else "nothing was saved yet"

    @contextmanager
    def guard(self) -> Iterator[None]:
        """A save refused (not finite) or cut short (disk full) stops the run, naming the last good save."""
        from toolkit.lora_io.files import NonFiniteLora
        from toolkit.output import DiskFull

        try:
            yield
        except (NonFiniteLora, DiskFull) as err:
            raise EaselError(f"{err} The run stopped; {self.last_good()}.") from None

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
            for path in (self.step_lora(step), state_path(self.folder, self.name, step)):
                if path.exists():
                    path.unlink()
                    removed.append(path)
        return removed
