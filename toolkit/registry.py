"""Discovery of job kinds, process types and model architectures.

Built-in job kinds are declared in ``jobs/``; everything else comes from packages under
``extensions/``. Each package's ``__init__.py`` holds ``EXTENSION = Extension(...)`` naming
classes by import path ("module:Class"), so discovery imports no torch. The registry is built
once and is read-only afterwards.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Literal, Mapping

from toolkit.errors import EaselError


@dataclass(frozen=True)
class JobSpec:
    """A job kind (``job:`` in a config)."""

    name: str
    runner: str
    """Import path of the Job class, "module:Class"."""
    description: str = ""
    body: str = ""
    """Import path of the schema of its ``config:`` block when it has keys besides name and process (a JobBody)."""


@dataclass(frozen=True)
class ProcessSpec:
    """A process type (``config.process[].type``) that runs inside one job kind."""

    job: str
    name: str
    config: str
    """Import path of its Pydantic config model; must import without torch."""
    runner: str
    """Import path of the Process class; may import heavy code."""
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ModuleNames:
    """How other tools' files name a denoiser's modules where that differs from diffusers' (the UNet family's
    SGM / LDM names). Each function also takes the denoiser's layout: the loaded model's ``config``, else
    ``LoraProfile.denoiser_layout``."""

    to_file: Callable[[str, Any], str]
    """diffusers module path -> the files' name; raises KeyError for a name outside the layout."""
    from_file: Callable[[str, Any], str]
    """The files' name -> diffusers module path; raises KeyError or IndexError for a name outside the layout."""
    recognises: Callable[[str], bool]
    """Whether a module name read from a file is in this naming (and must be mapped back)."""


@dataclass(frozen=True)
class LoraProfile:
    """How an architecture's LoRA files are named and labelled for other tools (read by toolkit/lora_io)."""

    kohya_prefixes: Mapping[str, str] = field(default_factory=dict)
    """Component -> kohya key prefix, e.g. ``{"unet": "lora_unet", "text_encoder": "lora_te"}``."""
    comfy_prefixes: Mapping[str, str] = field(default_factory=dict)
    """Component -> ComfyUI key prefix, e.g. ``{"transformer": "diffusion_model"}``."""
    file_prefixes: Mapping[str, str] = field(default_factory=dict)
    """Component -> module-path prefix other tools' files use but the loaded module lacks (CLIP's ``text_model``
    since transformers 5): added in kohya/comfy names, removed when reading."""
    denoiser_names: ModuleNames | None = None
    """Other tools' names of the denoiser's modules (ComfyUI files always use them); None: diffusers' own."""
    denoiser_layout: Mapping[str, Any] = field(default_factory=dict)
    """The denoiser config ``denoiser_names`` reads when no model is loaded (e.g. a UNet's block layout)."""
    kohya_denoiser_names: bool = False
    """kohya files use ``denoiser_names`` too (SDXL's ``input_blocks_4_1_...``), not diffusers' names."""
    base_model_version: str = ""
    """``ss_base_model_version`` (kohya metadata), e.g. ``sd_v1``."""
    modelspec_architecture: str = ""
    """``modelspec.architecture`` without the ``/lora`` suffix, e.g. ``stable-diffusion-v1``."""
    modelspec_implementation: str = "diffusers"
    """``modelspec.implementation``."""
    module_words: tuple[str, ...] = ()
    """Module-name words containing ``_`` (e.g. ``noise_refiner``), to split kohya names back into paths."""
    signatures: tuple[str, ...] = ()
    """Regexes on raw LoRA keys that point to this architecture (used to guess it)."""


@dataclass(frozen=True)
class TinyModel:
    """An architecture's tiny random model, ``model.name_or_path: tiny:<arch>`` (built in code, no download)."""

    builder: str
    """Import path ("module:function") of ``build(folder, seed)``, which writes it as a diffusers folder."""
    single_file: str = ""
    """A single-file checkpoint the builder writes beside the folder (for loading tests); empty: none."""
    single_file_components: tuple[str, ...] = ()
    """The components whose weights that single file (with the folder's configs) loads."""


@dataclass(frozen=True)
class ReferenceImages:
    """How an architecture takes reference images: edit pairs in training (``datasets[].control_path``) and
    ``GenerateRequest.references`` in sampling (FLUX.1 Kontext, FLUX.2, Qwen-Image-Edit)."""

    count: int = 1
    """The most reference images one target takes."""
    size: Literal["target", "own"] = "target"
    """``target``: each reference is fitted to its target's bucket (scaled to cover, centre-cropped), as Kontext is
    trained; ``own``: it keeps its aspect ratio at ``area`` pixels (None: its own size) and at most ``max_area``."""
    area: int | None = None
    """``own``: the pixel area each reference is scaled to (up or down); None: its own size, down to ``max_area``."""
    max_area: int | None = None
    """``own``: the most pixels a reference keeps (scaled down beyond it)."""
    multiple: int = 16
    """``own``: both sides are rounded down to multiples of this."""
    text_encoder_sees: bool = False
    """The text encoder reads the references too (Qwen-Image-Edit's vision-language encoder): ``encode_prompts`` is
    given them, and cached text rows are keyed by them as well as by the caption."""

    def fitted_size(self, source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
        """(width, height) a reference of size ``source`` is fitted to, for a target bucket of size ``target``."""
        if self.size == "target":
            return target
        width, height = source
        area = self.area if self.area is not None else width * height
        if self.max_area is not None:
            area = min(area, self.max_area)
        scale = (area / (width * height)) ** 0.5
        step = self.multiple
        return max(step, int(width * scale) // step * step), max(step, int(height * scale) // step * step)


@dataclass(frozen=True)
class ControlNetProfile:
    """How an architecture takes ControlNets: diffusers' classes for them and their pipelines, and what a fitting
    ControlNet's config says (read by the generate job's checks and ``PipelineAdapter``)."""

    model: str
    """diffusers class of its ControlNets, e.g. ``ControlNetModel``."""
    txt2img: str
    """diffusers txt2img ControlNet pipeline, e.g. ``StableDiffusionControlNetPipeline``."""
    img2img: str = ""
    """diffusers img2img ControlNet pipeline; empty: the adapter does img2img with ControlNets itself."""
    union_model: str = ""
    """diffusers class of union ControlNets (one model, a control mode per image); empty: none."""
    union_txt2img: str = ""
    union_img2img: str = ""
    union_modes: Mapping[str, int] = field(default_factory=dict)
    """Control mode names of union ControlNets -> their index (``controlnets[].mode``)."""
    max_models: int = 0
    """How many ControlNets one image may use; 0: any number."""
    guidance_window: bool = True
    """Whether a ControlNet can act on part of the steps only (``start`` / ``end``)."""
    config_values: Mapping[str, Any] = field(default_factory=dict)
    """Values a fitting ControlNet's config.json has (a missing key counts as None), e.g. SDXL's
    ``addition_embed_type: text_time``."""
    shared_config: tuple[str, ...] = ()
    """Config keys a ControlNet shares with the denoiser it was trained for (e.g. ``cross_attention_dim``)."""
    tiny: str = ""
    """Import path of ``build(base_folder, folder, seed, union=False)``: a tiny random ControlNet for the tiny model."""


@dataclass(frozen=True)
class IPAdapterProfile:
    """That an architecture takes IP-Adapters through diffusers' ``IPAdapterMixin.load_ip_adapter``."""

    tiny: str = ""
    """Import path of ``build(base_folder, folder, seed)``: a tiny random IP-Adapter (weights file and image
    encoder) for the tiny model."""


@dataclass(frozen=True)
class ArchSpec:
    """A model architecture; ``adapter`` implements toolkit.models.base.ModelAdapter and reads its facts here."""

    name: str
    adapter: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    denoiser: str = "unet"
    """Component name of the denoiser in its diffusers pipeline and in LoRA files (``unet`` or ``transformer``)."""
    pipeline: str = ""
    """diffusers txt2img pipeline class; its ``lora_state_dict`` also converts other tools' LoRA files."""
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"base": {}})
    """Variant name -> default settings (sample_steps, guidance_scale, ...); ``arch: name:variant``."""
    default_variant: str = "base"
    samplers: tuple[str, ...] = ()
    default_sampler: str = ""
    noise_schedulers: tuple[str, ...] = ()
    """Training noise schedules that fit (``train.noise_scheduler``)."""
    bucket_divisibility: int = 8
    """Image sides must be multiples of this."""
    default_lora_format: str = "kohya"
    lora: LoraProfile | None = None
    """LoRA file naming for other tools; None: toolkit/lora_io's defaults."""
    tiny: TinyModel | None = None
    """Its tiny built-in model; None: ``tiny:<arch>`` is an error."""
    legacy_flags: tuple[str, ...] = ()
    """ai-toolkit booleans in ``model:`` that select this architecture (e.g. one for SDXL)."""
    references: ReferenceImages | None = None
    """Reference images it takes (edit models); None: none (``control_path`` and sample references are refused)."""
    legacy_default: bool = False
    """ai-toolkit's architecture when a model block sets its ``is_*`` flags but none of them true (SD 1.x)."""
    controlnet: ControlNetProfile | None = None
    """How it takes ControlNets; None: it takes none."""
    ip_adapter: IPAdapterProfile | None = None
    """How it takes IP-Adapters; None: it takes none."""


@dataclass(frozen=True)
class ArchRef:
    """An architecture with its chosen variant."""

    spec: ArchSpec
    variant: str

    @property
    def name(self) -> str:
        return f"{self.spec.name}:{self.variant}" if self.variant != self.spec.default_variant else self.spec.name

    @property
    def defaults(self) -> Mapping[str, Any]:
        return self.spec.variants[self.variant]


@dataclass(frozen=True)
class Extension:
    """What one package provides. Put ``EXTENSION = Extension(...)`` in its ``__init__.py``."""

    name: str
    description: str = ""
    jobs: tuple[JobSpec, ...] = ()
    processes: tuple[ProcessSpec, ...] = ()
    architectures: tuple[ArchSpec, ...] = ()


class RegistryError(EaselError, LookupError):
    """A name that is not registered, or two extensions claiming one name."""


def load_object(path: str) -> Any:
    """Import "package.module:Attribute"."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _unknown(kind: str, name: str, known: Iterable[str], extra: str = "", scope: str = "") -> RegistryError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    return RegistryError(f"unknown {kind} '{name}'{scope}{hint} Valid: {', '.join(known) or '(none)'}.{extra}")


class Registry:
    """Immutable lookup tables of what the built-ins and extensions provide."""

    def __init__(self, extensions: Iterable[Extension], broken: Mapping[str, str] | None = None):
        jobs: dict[str, JobSpec] = {}
        processes: dict[tuple[str, str], ProcessSpec] = {}
        archs: dict[str, ArchSpec] = {}
        owners: dict[tuple[str, str], str] = {}
        for ext in extensions:
            for job in ext.jobs:
                self._claim(owners, ("job", job.name), ext.name)
                jobs[job.name] = job
            for proc in ext.processes:
                for name in (proc.name, *proc.aliases):
                    self._claim(owners, (f"process of job '{proc.job}'", name), ext.name)
                    processes[(proc.job, name)] = proc
            for arch in ext.architectures:
                for name in (arch.name, *arch.aliases):
                    self._claim(owners, ("architecture", name), ext.name)
                    archs[name] = arch
        self.jobs: Mapping[str, JobSpec] = MappingProxyType(jobs)
        self.processes: Mapping[tuple[str, str], ProcessSpec] = MappingProxyType(processes)
        self.archs: Mapping[str, ArchSpec] = MappingProxyType(archs)
        self.broken: Mapping[str, str] = MappingProxyType(dict(broken or {}))

    @staticmethod
    def _claim(owners: dict[tuple[str, str], str], key: tuple[str, str], owner: str) -> None:
        if key in owners:
            raise RegistryError(f"the {key[0]} '{key[1]}' is declared by both '{owners[key]}' and '{owner}'; rename one of them.")
        owners[key] = owner

    def _broken_note(self) -> str:
        if not self.broken:
            return ""
        names = ", ".join(f"'{name}' ({error.splitlines()[-1]})" for name, error in self.broken.items())
        return f" Extensions that failed to load, and may provide it: {names}."

    def job(self, name: str) -> JobSpec:
        if name not in self.jobs:
            raise _unknown("job", name, self.jobs, self._broken_note())
        return self.jobs[name]

    def process(self, job: str, name: str) -> ProcessSpec:
        if (job, name) not in self.processes:
            known = [p for (j, p) in self.processes if j == job]
            raise _unknown("process type", name, known, self._broken_note(), scope=f" for job '{job}'")
        return self.processes[(job, name)]

    def arch_names(self) -> list[str]:
        """Every accepted spelling: names, aliases, and name:variant."""
        names = set(self.archs)
        for spec in self.archs.values():
            if len(spec.variants) > 1:
                names.update(f"{spec.name}:{variant}" for variant in spec.variants)
        return sorted(names)

    def arch(self, name: str) -> ArchRef:
        base, _, variant = name.strip().lower().partition(":")
        spec = self.archs.get(base)
        if spec is None or (variant and variant not in spec.variants):
            raise _unknown("architecture", name, self.arch_names(), self._broken_note())
        return ArchRef(spec, variant or spec.default_variant)

    def legacy_arch_flags(self) -> dict[str, str]:
        """ai-toolkit flag name -> architecture name."""
        return {flag: spec.name for spec in self.archs.values() for flag in spec.legacy_flags}

    def legacy_default_arch(self) -> str | None:
        """The architecture ai-toolkit trains when none of its ``is_*`` flags is true (one declares it), or None."""
        return next((spec.name for spec in self.archs.values() if spec.legacy_default), None)

    @classmethod
    def discover(cls, builtins: Iterable[str] = ("jobs",), extensions_dir: Path | None = None) -> "Registry":
        """Import the built-in declaration modules and every package under ``extensions_dir``."""
        found: list[Extension] = []
        broken: dict[str, str] = {}
        for module_name in builtins:
            found.append(importlib.import_module(module_name).EXTENSION)
        if extensions_dir is not None and extensions_dir.is_dir():
            package = extensions_dir.name
            parent = str(extensions_dir.parent.resolve())
            if parent not in sys.path:
                sys.path.insert(0, parent)
            for folder in sorted(extensions_dir.iterdir()):
                if not (folder / "__init__.py").is_file() or folder.name.startswith(("_", ".")):
                    continue
                try:
                    module = importlib.import_module(f"{package}.{folder.name}")
                    ext = module.EXTENSION
                    if not isinstance(ext, Extension):
                        raise TypeError("EXTENSION must be a toolkit.registry.Extension")
                    found.append(ext)
                except Exception as err:  # a broken extension must not break the others
                    broken[folder.name] = "".join(traceback.format_exception_only(type(err), err)).strip()
        return cls(found, broken)
