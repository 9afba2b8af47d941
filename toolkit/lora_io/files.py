"""Saving and loading LoRA files: ``save_lora`` (what the trainer calls), ``load_lora`` and ``LoraFile``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.lora_io.formats import ADAPTER_METADATA_KEY, FORMATS, PEFT_CONFIG_KEY, detect_format, write
from toolkit.lora_io.keys import LoraModule, describe_names, flat_state_dict, group_modules, non_finite, summary
from toolkit.lora_io.metadata import addnet_hashes, build_header
from toolkit.lora_io.namer import Namer
from toolkit.lora_io.profiles import guess_arch, profile_of
from toolkit.lora_io.readers import finish_modules, read, read_diffusers
from toolkit.registry import ArchRef, ArchSpec

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter
    from toolkit.registry import Registry

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "float32": "float32",
              "float16": "float16", "bfloat16": "bfloat16"}


def resolve_arch(arch: "ArchRef | ArchSpec | str", registry: "Registry | None" = None) -> ArchRef:
    """An architecture given as ArchRef, ArchSpec or name (``sdxl``, ``zimage:turbo``: looked up in ``registry``)."""
    if isinstance(arch, ArchRef):
        return arch
    if isinstance(arch, ArchSpec):
        return ArchRef(arch, arch.default_variant)
    if registry is None:
        raise ValueError(f"architecture '{arch}' given by name: pass the registry too (or an ArchRef / ArchSpec)")
    return registry.arch(arch)


@dataclass
class LoraFile:
    """A LoRA in easel's canonical layout, with where it came from."""

    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "canonical"
    arch: str | None = None
    """The architecture name it is for (given, read from a model, or guessed); None when unknown."""
    path: Path | None = None

    @classmethod
    def from_state_dict(cls, state_dict: "Mapping[str, torch.Tensor]", arch: str | None = None) -> "LoraFile":
        """A LoraFile holding a canonical state dict (checked)."""
        return cls(finish_modules(group_modules(dict(state_dict))), arch=arch)

    def state_dict(self) -> "dict[str, torch.Tensor]":
        """The canonical state dict (``component.module.lora_A.weight`` ...)."""
        return flat_state_dict(self.modules)

    def summary(self) -> dict[str, object]:
        return summary(self.modules)

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else "LoRA"


def _dtype(dtype: "str | torch.dtype | None") -> "torch.dtype | None":
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in PRECISIONS:
        raise EaselError(f"unknown dtype '{dtype}'; use fp32, fp16 or bf16.")
    return getattr(torch, PRECISIONS[str(dtype).lower()])


def _cast(tensors: "dict[str, torch.Tensor]", dtype: "torch.dtype | None") -> "dict[str, torch.Tensor]":
    out = {}
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous().clone()
    return out


class NonFiniteLora(EaselError):
    """A LoRA whose tensors hold inf or NaN in the dtype it is (or would be) stored in."""


def _refuse_non_finite(source: "dict[str, torch.Tensor]", stored: "dict[str, torch.Tensor]", target: Path) -> None:
    """Refuse a save whose tensors are not all finite as stored; ``source`` (before the cast) tells overflow from NaN."""
    import torch

    bad = non_finite(stored)
    if not bad:
        return
    dtype = stored[bad[0]].dtype
    if non_finite({key: source[key] for key in bad}):
        reason = "the weights themselves hold inf or NaN (training diverged)"
    else:
        largest = max(float(source[key].abs().max()) for key in bad)
        reason = (f"the weights grew past what {str(dtype).removeprefix('torch.')} holds (largest |value| {largest:.4g}, "
                  f"its limit {torch.finfo(dtype).max:.6g}): save in bf16 or fp32 (save.dtype), or lower the learning rate")
    raise NonFiniteLora(f"refused to write {target}: {len(bad)} of {len(stored)} tensors are not finite as stored "
                        f"({describe_names(bad)}); {reason}. Nothing was written or replaced.")


def save_lora(state_dict: "Mapping[str, torch.Tensor] | LoraFile", path: str | Path, *, arch: "ArchRef | ArchSpec | str",
              format: str | None = None, metadata: Mapping[str, Any] | None = None,
              dtype: "str | torch.dtype | None" = None, registry: "Registry | None" = None,
              adapter: "ModelAdapter | None" = None) -> Path:
    """Write a LoRA given in easel's canonical layout to ``path`` (atomically) in ``format``.

    ``format``: kohya, comfy, diffusers or peft; default: the architecture's. ``metadata``: plain
    keys (see ``metadata.KNOWN_KEYS``: name, trigger_word, steps, resolution, num_train_images,
    tag_frequency, base_model, prediction_type, network_type, config, ...) become kohya ``ss_*``
    and ``modelspec.*`` fields; ``ss_*`` / ``modelspec.*`` / ``easel.*`` entries are kept as given.
    ``dtype``: fp16, bf16, fp32 or None (as given). ``registry``: where an ``arch`` given by name is looked up.
    ``adapter``: the model the LoRA was made for; the denoiser's file names (SGM names for a UNet) then follow its
    own layout (e.g. fewer layers per block than the architecture's usual one), as ComfyUI and AUTOMATIC1111 map them.

    Raises:
        NonFiniteLora: a tensor is inf or NaN as stored (fp16 overflow included); nothing is written.
        DiskFull: the disk filled up; a file already at ``path`` is intact.
    """
    from safetensors.torch import save

    from toolkit.output import atomic_write

    ref = resolve_arch(arch, registry)
    fmt = (format or ref.spec.default_lora_format).lower()
    if fmt not in FORMATS:
        raise EaselError(f"unknown LoRA format '{format}'; valid: {', '.join(FORMATS)}.")
    modules = state_dict.modules if isinstance(state_dict, LoraFile) else finish_modules(group_modules(dict(state_dict)))
    if not modules:
        raise EaselError("save_lora: the state dict holds no LoRA modules.")
    profile = profile_of(ref.spec)
    written, extra = write(modules, fmt, Namer.of(ref.spec, adapter=adapter))
    tensors = _cast(written, _dtype(dtype))
    target = Path(path)
    _refuse_non_finite(written, tensors, target)
    head = build_header(dict(metadata or {}), summary(modules), arch=ref.name, profile=profile, defaults=ref.defaults, fmt=fmt)
    head.update(extra)
    head["sshs_model_hash"], head["sshs_legacy_hash"] = addnet_hashes(tensors, head)
    data = save(tensors, metadata=head)
    with atomic_write(target) as handle:
        handle.write(data)
    return target


def read_file(path: Path) -> "tuple[dict[str, torch.Tensor], dict[str, str]]":
    """Tensors and header metadata of a .safetensors file (with peft's adapter_config.json beside it, its text too)."""
    from safetensors import SafetensorError, safe_open

    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise EaselError(f"'{path}' is not a .safetensors file; easel reads LoRAs only in that format (pickle files can run code).")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors, meta = {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise EaselError(f"'{path}' could not be read as a .safetensors file: {err}") from err
    sidecar = path.with_name("adapter_config.json")
    if path.name == "adapter_model.safetensors" and sidecar.is_file():
        meta[PEFT_CONFIG_KEY] = sidecar.read_text(encoding="utf-8")
    return tensors, meta


LORA_FILE_NAMES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
"""The file a LoRA folder holds: diffusers' ``save_lora_weights``, peft's ``save_pretrained``."""


def _file_in(folder: Path) -> Path:
    """The LoRA file of a folder diffusers or peft saved (or its only .safetensors file)."""
    for name in LORA_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    raise EaselError(f"LoRA folder '{folder}' holds {len(found)} .safetensors files and none of "
                     f"{', '.join(LORA_FILE_NAMES)}; give the file's path.")


def load_lora(source: str | Path, *, arch: "ArchRef | ArchSpec | str | None" = None, adapter: "ModelAdapter | None" = None,
              registry: "Registry | None" = None, require_arch: bool = True) -> LoraFile:
    """Read a LoRA in any supported layout into the canonical one.

    With ``adapter`` the names are resolved against the loaded model exactly and every module must
    exist there (else EaselError listing the ones that do not); without it, ``arch`` or a guess
    from the file (metadata, key names, over the architectures of ``registry``) picks the naming
    profile. ``require_arch=False`` reads files of unknown architecture too (the denoiser then
    counts as ``unet``).
    """
    from toolkit.models.loading import resolve_file

    local = Path(source).expanduser()
    if local.is_dir():
        source = local = _file_in(local)
    if not local.is_file() and (local.is_absolute() or str(source).startswith(".") or len(local.parts) < 3):
        raise EaselError(f"LoRA file '{source}' does not exist.")
    path = resolve_file(str(source), "LoRA")
    raw, meta = read_file(path)
    if not raw:
        raise EaselError(f"'{path}' holds no tensors.")
    bad = non_finite(raw)
    if bad:
        raise NonFiniteLora(f"'{path}' holds inf or NaN values in {len(bad)} of {len(raw)} tensors ({describe_names(bad)}); "
                            "applied, it would make black or broken images. It was saved from a run that diverged, or in "
                            "fp16 past its range: use an earlier save, or train again with a lower learning rate.")
    fmt = detect_format(list(raw))
    arch_name, spec = _arch_of(arch, adapter, list(raw), meta, registry)
    namer = Namer.of(spec, arch_name, adapter, lenient=not require_arch)
    pipeline = spec.pipeline if spec is not None else ""
    try:
        lora = LoraFile(read(raw, meta, fmt, namer, str(path)), meta, fmt, arch_name, path)
    except EaselError as err:
        converted = _via_diffusers(path, meta, fmt, arch_name, pipeline)
        if converted is None:
            raise
        log.info(f"{path}: read with diffusers' {pipeline} converter ({str(err).splitlines()[0][:160]})")
        lora = converted
    if adapter is not None:
        lora = _fit_to_model(lora, adapter, pipeline, raw, namer)
    return lora


def _arch_of(arch: Any, adapter: "ModelAdapter | None", keys: list[str], meta: dict[str, str],
             registry: "Registry | None") -> "tuple[str | None, ArchSpec | None]":
    """(name, spec) of the LoRA's architecture: the adapter's, the one given (an unregistered ArchSpec or ArchRef
    works too), or the one of ``registry``'s that its keys and metadata point to; (None, None) when unknown."""
    if adapter is not None:
        return adapter.arch.name, adapter.arch.spec
    if arch is not None:
        ref = resolve_arch(arch, registry)
        return ref.name, ref.spec
    if registry is None:
        return None, None
    name = guess_arch(keys, meta, registry)
    return name, registry.archs.get(name.partition(":")[0]) if name else None


def _fit_to_model(lora: LoraFile, adapter: "ModelAdapter", pipeline: str, raw: "dict[str, torch.Tensor]",
                  namer: Namer) -> LoraFile:
    """Check the modules against the model; when some do not fit, read the denoiser names with the profile's layout
    (what easel wrote before it followed the model's own), then try diffusers' converter (``pipeline``'s)."""
    from dataclasses import replace

    from toolkit.lora_io.model import check_fits, mismatches

    if mismatches(lora.modules, adapter) and namer.profile.denoiser_layout and "via diffusers" not in lora.format:
        try:
            modules = read(raw, lora.metadata, lora.format, replace(namer, profile_layout=True, _indexes={}), lora.label)
        except EaselError:
            modules = {}
        if modules and not mismatches(modules, adapter):
            return LoraFile(modules, lora.metadata, lora.format, lora.arch, lora.path)
    if mismatches(lora.modules, adapter) and lora.path is not None and "via diffusers" not in lora.format:
        converted = _via_diffusers(lora.path, lora.metadata, lora.format, lora.arch, pipeline)
        if converted is not None and not mismatches(converted.modules, adapter):
            return converted
    check_fits(lora.modules, adapter, f"{lora.label} ({lora.format} format)")
    return lora


def _via_diffusers(path: Path, meta: dict[str, str], fmt: str, arch: str | None, pipeline_class: str) -> LoraFile | None:
    """Other tools' layouts that diffusers' own pipeline loader converts (alphas folded into the weights)."""
    if not pipeline_class:
        return None
    import diffusers

    try:
        converted = getattr(diffusers, pipeline_class).lora_state_dict(str(path))
        state, alphas = converted if isinstance(converted, tuple) else (converted, None)
        if alphas:
            return None
        modules = read_diffusers(dict(state), {}, str(path))
    except (ValueError, KeyError, RuntimeError, AttributeError, IndexError, EaselError):
        return None
    return LoraFile(modules, meta, f"{fmt} (via diffusers)", arch, path)


def convert_header(lora: LoraFile) -> dict[str, str]:
    """A source file's metadata to carry into a converted file (its format-specific entries and hashes dropped)."""
    return {key: value for key, value in lora.metadata.items()
            if key not in (ADAPTER_METADATA_KEY, PEFT_CONFIG_KEY) and not key.startswith("sshs_") and key not in ("easel.format", "format")}
