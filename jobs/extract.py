"""``job: extract``: LoRAs taken from the difference of two checkpoints; ``job: mod``: a LoRA rescaled (ai-toolkit's kinds).

Extraction: for every linear layer (and, with ``locon``, every 3x3 convolution) of the chosen components whose
weights differ, the change ``W_tuned - W_base`` is factorised by SVD and truncated to the rank the mode picks; the
LoRA applied at weight 1 to the base model gives the tuned weights up to what the truncation drops.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.job import Job, Process
from toolkit.log import log

if TYPE_CHECKING:
    import torch

    from toolkit.lora_io.keys import LoraModule
    from toolkit.lora_io.ops import RankRule
    from toolkit.models.base import ModelAdapter


class ExtractJob(Job):
    """Loads the two models once for all its processes."""

    _models: "tuple[ModelAdapter, ModelAdapter] | None" = None

    def models(self) -> "tuple[ModelAdapter, ModelAdapter]":
        """(base, tuned), loaded in float32 on the job's device."""
        if self._models is None:
            from toolkit.config.blocks import ModelConfig
            from toolkit.models.loading import load_adapter

            body = self.loaded.body
            loaded = []
            for what, name in (("base_model", body.base_model), ("extract_model", body.extract_model)):
                log.info(f"Loading {what}: {name}")
                config = ModelConfig(name_or_path=name, arch=body.arch)
                loaded.append(load_adapter(config, self.registry, device=body.device, dtype="fp32"))
            self._models = (loaded[0], loaded[1])
        return self._models

    def cleanup(self) -> None:
        self._models = None
        super().cleanup()


def rule_for(mode: str, value: float) -> "RankRule":
    """ai-toolkit's extract modes as a rank rule."""
    from toolkit.lora_io.ops import RankRule

    if mode == "fixed":
        return RankRule(rank=int(value))
    if mode == "threshold":
        return RankRule(threshold=value)
    if mode == "ratio":
        return RankRule(sv_ratio=1.0 / value)
    return RankRule(quantile=value)


def layer_changes(base: "ModelAdapter", tuned: "ModelAdapter", components: list[str], convs: bool,
                  min_diff: float) -> "list[tuple[str, str, torch.Tensor]]":
    """(key, kind, weight change) of every linear (and with ``convs`` 3x3 conv) layer that changed by min_diff or more."""
    from toolkit.network.targets import layer_kind, walk

    found = []
    theirs = tuned.components()
    for component in components:
        other = dict(walk(theirs[component]))
        for path, layer in walk(base.components()[component]):
            kind = layer_kind(layer)
            if kind is None or (kind == "conv" and not convs):
                continue
            if path not in other or other[path].weight.shape != layer.weight.shape:
                raise EaselError(f"extract: the two models differ in shape at {component}.{path}; they must be the same "
                                 "architecture and size.")
            delta = other[path].weight.detach().float() - layer.weight.detach().float()
            if float(delta.abs().max()) >= min_diff:
                found.append((f"{component}.{path}", kind, delta))
    return found


class ExtractProcess(Process):
    """Write one LoRA (``lora``) or LoCon (``locon``) of the difference."""

    def _target(self) -> Path:
        c, body = self.config, self.job.loaded.body
        if c.output_path:
            return Path(c.output_path)
        filename = c.filename or f"{self.job.name}_{c.type}_{self.index}.safetensors"
        return Path(body.output_folder) / filename

    def _components(self, adapter: "ModelAdapter") -> list[str]:
        c, body = self.config, self.job.loaded.body
        unet = body.extract_unet if c.extract_unet is None else c.extract_unet
        text = body.extract_text_encoder if c.extract_text_encoder is None else c.extract_text_encoder
        names = [name for name in adapter.components() if (name == adapter.denoiser_name and unet) or
                 (name != adapter.denoiser_name and text)]
        if not names:
            raise EaselError(f"process {self.index}: extract_unet and extract_text_encoder are both off; nothing to extract.")
        return names

    def plan(self) -> list[str]:
        c, body = self.config, self.job.loaded.body
        values = f"linear {c.linear:g}" + (f", conv {c.conv:g}" if c.type == "locon" else "")
        return [f"process {self.index}: extract {c.type} ({c.mode}: {values}) of {body.extract_model} - {body.base_model}",
                f"  -> {self._target()} ({c.dtype or body.dtype}, {c.format or 'the architecture default format'})"]

    def run(self) -> None:
        from toolkit.lora_io.files import LoraFile, save_lora
        from toolkit.lora_io.ops import Report, extract_module

        c, body = self.config, self.job.loaded.body
        base, tuned = self.job.models()
        rules = {"linear": rule_for(c.mode, c.linear), "conv": rule_for(c.mode, c.conv)}
        modules: dict[str, LoraModule] = {}
        report = Report()
        for key, kind, delta in layer_changes(base, tuned, self._components(base), c.type == "locon", c.min_diff):
            modules[key], entry = extract_module(key, delta, rules[kind])
            report.modules.append(entry)
        if not modules:
            raise EaselError(f"process {self.index}: the two models have no layer that differs by {c.min_diff:g} or more; "
                             "is extract_model the fine-tuned one?")
        metadata = {"name": self._target().stem, **self.job.loaded.meta.model_dump(exclude_defaults=True),
                    "network_type": c.type, "base_model": body.base_model}
        target = save_lora(LoraFile(modules, arch=base.arch.name), self._target(), arch=base.arch, format=c.format,
                           metadata=metadata, dtype=c.dtype or body.dtype, adapter=base)
        log.info(f"Extracted {len(modules)} modules into {target}")
        for line in report.lines():
            log.info(f"  {line}")


class ModJob(Job):
    """ai-toolkit's ``job: mod``: LoRA file modifications."""


class RescaleLoraProcess(Process):
    """Rescale a LoRA's update by current_weight / target_weight."""

    def plan(self) -> list[str]:
        c = self.config
        return [f"process {self.index}: rescale {c.input_path} (weight {c.current_weight:g} -> {c.target_weight:g}, "
                f"via {c.scale_target}) -> {c.output_path}"]

    def run(self) -> None:
        from toolkit.lora_io.files import LoraFile, convert_header, load_lora, resolve_arch, save_lora
        from toolkit.lora_io.formats import FORMATS
        from toolkit.lora_io.ops import scale_module

        c = self.config
        lora = load_lora(c.input_path, arch=c.arch, registry=self.job.registry)
        if lora.arch is None:
            raise EaselError(f"process {self.index}: cannot tell which architecture {c.input_path} is for; set `arch`.")
        ref = resolve_arch(lora.arch, self.job.registry)
        factor = c.current_weight / c.target_weight
        modules = {key: scale_module(module, factor, c.scale_target) for key, module in lora.modules.items()}
        metadata: dict[str, Any] = (self.job.loaded.meta.model_dump(exclude_defaults=True) if c.replace_meta
                                    else convert_header(lora))
        fmt = c.format or (lora.format if lora.format in FORMATS else ref.spec.default_lora_format)
        target = save_lora(LoraFile(modules, arch=ref.name), c.output_path, arch=ref, format=fmt, metadata=metadata,
                           dtype=c.save_dtype)
        log.info(f"Rescaled {len(modules)} modules of {c.input_path} by {factor:g}: {target}")
