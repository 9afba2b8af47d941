"""``job: convert``: the LoRA file tools, each a process (convert, merge, resize, inspect).

Heavy imports (torch, the models) happen in ``run``; ``plan`` only reads the config (``--dry-run``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.job import Job, Process
from toolkit.log import log
from toolkit.models.saving import save_folder, save_single_file
from toolkit.output import write_text_atomic

if TYPE_CHECKING:
    from toolkit.lora_io.files import LoraFile
    from toolkit.lora_io.ops import RankRule
    from toolkit.models.base import ModelAdapter


class ConvertJob(Job):
    """Runs the LoRA tools in order."""


def _exists(path: str) -> str:
    return "" if Path(path).expanduser().exists() else " (not found yet)"


def _rule_text(config: Any) -> str:
    parts = [f"rank <= {config.rank}" if config.rank else "", f"singular values >= max/{config.sv_ratio:g}" if config.sv_ratio else "",
             f"{config.energy:g} of the energy" if config.energy else ""]
    return ", ".join(part for part in parts if part)


class _LoraTool(Process):
    """Shared by the tools: the optional base model, the architecture, the rank rule."""

    adapter: "ModelAdapter | None" = None

    def model(self) -> "ModelAdapter | None":
        """The base model of ``model:`` (loaded once), or None."""
        model = getattr(self.config, "model", None)
        if model is None:
            return None
        if self.adapter is None:
            from toolkit.models.loading import load_adapter

            self.adapter = load_adapter(model, self.job.registry, device=self.config.device, dtype=model.dtype or "fp32")
        return self.adapter

    def arch_of(self, loras: "list[LoraFile]") -> str:
        """The one architecture of the LoRAs (from config, model, metadata or a guess); EaselError otherwise."""
        names = {lora.arch.partition(":")[0] for lora in loras if lora.arch}
        if getattr(self.config, "arch", None):
            return self.config.arch
        if len(names) == 1:
            return next(lora.arch for lora in loras if lora.arch)  # type: ignore[return-value]
        found = ", ".join(sorted(names)) or "none could be told from the files"
        raise EaselError(f"process {self.index} ({self.config.type}): set `arch`; the LoRAs' architectures: {found}.")

    def rule(self) -> "RankRule":
        from toolkit.lora_io.ops import RankRule

        return RankRule(self.config.rank, self.config.sv_ratio, self.config.energy)

    def shapes(self, lora_keys: list[str]) -> dict[str, tuple[int, ...]]:
        """Weight shapes of the targeted layers, from the base model when there is one."""
        adapter = self.model()
        if adapter is None:
            return {}
        from toolkit.lora_io.model import base_layer

        components = adapter.components()
        shapes = {}
        for key in lora_keys:
            component, _, name = key.partition(".")
            if component in components:
                shapes[key] = tuple(base_layer(components[component].get_submodule(name)).weight.shape)
        return shapes

    def cleanup(self) -> None:
        self.adapter = None


class ConvertProcess(_LoraTool):
    """Read a LoRA in any layout and write it in another."""

    def plan(self) -> list[str]:
        c = self.config
        with_model = f", names checked against {c.model.name_or_path}" if c.model else ""
        return [f"process {self.index}: convert {c.input}{_exists(c.input)} -> {c.output}",
                f"  format {c.format or 'the architecture default'}, arch {c.arch or 'from the file'}, "
                f"dtype {c.dtype or 'as read'}{with_model}"]

    def run(self) -> None:
        from toolkit.lora_io.files import convert_header, load_lora, resolve_arch, save_lora
        from toolkit.lora_io.formats import written_name
        from toolkit.lora_io.namer import Namer

        c = self.config
        lora = load_lora(c.input, arch=c.arch, adapter=self.model(), registry=self.job.registry)
        ref = resolve_arch(self.arch_of([lora]), self.job.registry)
        fmt = c.format or ref.spec.default_lora_format
        target = save_lora(lora, c.output, arch=ref, format=fmt, metadata=convert_header(lora), dtype=c.dtype)
        namer = Namer.of(ref.spec)
        rows = [(m.source or m.key, m.key, written_name(m, fmt, namer)) for m in lora.modules.values()]
        log.info(f"Converted {len(rows)} modules of {lora.label} ({lora.format}, {ref.name}) to {fmt}: {target}")
        for source, canonical, written in rows[:8]:
            log.info(f"  {source} -> {canonical} -> {written}")
        if len(rows) > 8:
            log.info(f"  ... and {len(rows) - 8} more" + ("" if c.report_file else " (report_file lists all)"))
        if c.report_file:
            write_text_atomic(Path(c.report_file), "".join(f"{s}\t{k}\t{w}\n" for s, k, w in rows))


class MergeProcess(_LoraTool):
    """Bake LoRAs into a base model, or merge them into one LoRA."""

    def plan(self) -> list[str]:
        c = self.config
        loras = ", ".join(f"{item.path}{_exists(item.path)} x{item.weight:g}" for item in c.loras)
        if c.mode == "model":
            what = f"bake into {c.model.name_or_path} ({c.model.arch}), save as {c.save_as} to {c.output}"
        else:
            rule = f" ({_rule_text(c)})" if c.mode == "svd" else " (exact)"
            what = f"merge into one LoRA by {c.mode}{rule} -> {c.output} ({c.format or 'default format'})"
        return [f"process {self.index}: merge {loras}", f"  {what}"]

    def run(self) -> None:
        if self.config.mode == "model":
            self._bake()
        else:
            self._merge_loras()

    def _bake(self) -> None:
        from toolkit.lora_io.apply import bake_loras

        c = self.config
        adapter = self.model()
        bake_loras(adapter, [(item.path, item.weight) for item in c.loras])
        output = Path(c.output)
        if c.save_as == "single_file":
            save_single_file(adapter, output, c.dtype)
        else:
            save_folder(adapter, output, c.dtype)
        log.info(f"Baked {len(c.loras)} LoRA(s) into {c.model.name_or_path}: {output}")

    def _merge_loras(self) -> None:
        from toolkit.lora_io.files import LoraFile, load_lora, resolve_arch, save_lora
        from toolkit.lora_io.ops import merge_loras

        c = self.config
        adapter = self.model()
        files = [load_lora(item.path, arch=c.arch, adapter=adapter, registry=self.job.registry) for item in c.loras]
        ref = resolve_arch(self.arch_of(files), self.job.registry)
        keys = sorted({key for lora in files for key in lora.modules})
        merged, report = merge_loras([(f, item.weight) for f, item in zip(files, c.loras)], c.mode, self.rule(), self.shapes(keys))
        metadata = {"name": c.name or Path(c.output).stem,
                    "easel.merged_from": json.dumps([{"path": item.path, "weight": item.weight} for item in c.loras])}
        target = save_lora(LoraFile(merged, arch=ref.name), c.output, arch=ref, format=c.format, metadata=metadata, dtype=c.dtype)
        log.info(f"Merged {len(files)} LoRA(s) by {c.mode} into {target}")
        for line in report.lines():
            log.info(f"  {line}")


class ResizeProcess(_LoraTool):
    """Reduce a LoRA's rank by SVD."""

    def plan(self) -> list[str]:
        c = self.config
        return [f"process {self.index}: resize {c.input}{_exists(c.input)} -> {c.output}",
                f"  keep {_rule_text(c)}; format {c.format or 'as read'}, dtype {c.dtype or 'as read'}"]

    def run(self) -> None:
        from toolkit.lora_io.files import LoraFile, convert_header, load_lora, resolve_arch, save_lora
        from toolkit.lora_io.formats import FORMATS
        from toolkit.lora_io.ops import resize_lora

        c = self.config
        lora = load_lora(c.input, arch=c.arch, adapter=self.model(), registry=self.job.registry)
        ref = resolve_arch(self.arch_of([lora]), self.job.registry)
        resized, report = resize_lora(lora, self.rule(), self.shapes(list(lora.modules)))
        fmt = c.format or (lora.format if lora.format in FORMATS else ref.spec.default_lora_format)
        target = save_lora(LoraFile(resized, arch=ref.name), c.output, arch=ref, format=fmt,
                           metadata=convert_header(lora), dtype=c.dtype)
        log.info(f"Resized {lora.label} into {target}")
        for line in report.lines():
            log.info(f"  {line}")


class InspectProcess(Process):
    """Describe LoRA files."""

    def files(self) -> list[Path]:
        inputs = self.config.input if isinstance(self.config.input, list) else [self.config.input]
        found: list[Path] = []
        for item in inputs:
            path = Path(item).expanduser()
            found += sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        return found

    def plan(self) -> list[str]:
        return [f"process {self.index}: inspect " + ", ".join(f"{p}{_exists(str(p))}" for p in self.files())]

    def run(self) -> None:
        from toolkit.lora_io.files import load_lora
        from toolkit.lora_io.inspect import describe, report_lines, to_json

        infos: list[dict[str, Any]] = []
        for path in self.files():
            lora = load_lora(path, arch=self.config.arch, registry=self.job.registry, require_arch=False)
            infos.append(describe(lora))
            print("\n".join(report_lines(infos[-1], self.config.show_keys)), flush=True)
        if self.config.output_file:
            write_text_atomic(Path(self.config.output_file), to_json(infos))
