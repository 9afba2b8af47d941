"""Where a base model comes from, and loading it into its architecture's adapter.

``model.name_or_path`` may be a hub id (``owner/name``), a local diffusers folder, a single-file
checkpoint (``.safetensors``; a pickle ``.ckpt``/``.pt``/``.bin`` only with ``allow_pickle``), a
hub file (``owner/name/file.safetensors``) or ``tiny:<arch>``, a tiny random model built in code by the
architecture's ``ArchSpec.tiny`` builder (``toolkit.models.tiny``). Nothing here knows an architecture: adapters call
``resolve_source`` and ``load_pipeline`` with their own pipeline classes.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.models.hub import in_hub_cache, library_message, local_files_only, model_not_found, offline_reason
from toolkit.models.tiny import TINY_PREFIX, arch_tiny_folder, cache_dir, tiny_name

if TYPE_CHECKING:
    import torch

    from toolkit.config.blocks import ModelConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.registry import ArchRef, Registry

SAFE_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
LOCAL_MODEL = "diffusers folder or .safetensors checkpoint"
"""What a local ``name_or_path`` must be (for error messages)."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``name_or_path``."""

    kind: Literal["folder", "hub", "file"]
    path: str
    revision: str | None = None
    config: str | None = None
    """Single files: the diffusers folder or hub id whose component configs (and missing parts) are used."""


def load_adapter(config: "ModelConfig", registry: "Registry", *, device: "str | torch.device" = "auto",
                 dtype: "str | torch.dtype | None" = None) -> "ModelAdapter":
    """Load ``config`` into the adapter class its ``arch`` names; device and dtype may be given by name."""
    import torch

    from toolkit.devices import resolve_device, resolve_dtype

    torch_device = resolve_device(device) if isinstance(device, str) else device
    chosen = dtype if dtype is not None else (config.dtype or "fp32")
    torch_dtype = chosen if isinstance(chosen, torch.dtype) else resolve_dtype(chosen)
    return load_model(config, registry.arch(config.arch), device=torch_device, dtype=torch_dtype)


def diffusers_class(name: str) -> Any:
    """A class exported by diffusers, by name (architectures name their pipelines and models as data)."""
    import diffusers

    return getattr(diffusers, name)


def load_model(config: "ModelConfig", arch: "ArchRef", *, device: "torch.device", dtype: "torch.dtype") -> "ModelAdapter":
    """Load ``config`` into ``arch``'s adapter class (imported only now); the trainer's model loader."""
    from toolkit.models.memory import check_applied
    from toolkit.registry import load_object

    adapter_class = load_object(arch.spec.adapter)
    log.info(f"Loading {arch.name} from {config.name_or_path} ({str(dtype).removeprefix('torch.')}, {device})")
    adapter = adapter_class.load(config, arch, device=device, dtype=dtype)
    check_applied(adapter)
    return adapter


def resolve_source(config: "ModelConfig", arch: "ArchRef") -> ModelSource:
    """Turn ``name_or_path`` into a folder, hub id or single file; raise EaselError when it cannot be used."""
    name = config.name_or_path.strip()
    extra = dict(config.model_kwargs)
    extra.setdefault("config", config.extras_name_or_path)
    tiny = tiny_name(name)
    if tiny is not None:
        return ModelSource("folder", str(arch_tiny_folder(tiny, arch)))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise EaselError(f"model.name_or_path: '{name}' is a folder but not a diffusers model (no model_index.json). "
                             "Give a diffusers folder, a .safetensors checkpoint or a hub id.")
        return ModelSource("folder", str(path))
    if path.is_file():
        return ModelSource("file", str(checkpoint_file(path, config.allow_pickle)), config.revision, extra.get("config"))
    if name.count("/") >= 2 and name.lower().endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES):
        if name.lower().endswith(PICKLE_SUFFIXES) and not config.allow_pickle:
            checkpoint_file(path, allow_pickle=False)
        local = resolve_file(name, "model.name_or_path", config.revision)
        return ModelSource("file", str(checkpoint_file(local, config.allow_pickle)), config.revision, extra.get("config"))
    if name.count("/") == 1 and not name.lower().endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES):
        _check_hub_cached("model.name_or_path", name, config.revision, tiny=f"{TINY_PREFIX}{arch.spec.name}")
        return ModelSource("hub", name, config.revision)
    raise model_not_found("model.name_or_path", name, local_kind=LOCAL_MODEL, tiny=f"{TINY_PREFIX}{arch.spec.name}")


def _check_hub_cached(what: str, repo_id: str, revision: str | None, filename: str = "model_index.json", tiny: str = "") -> None:
    """Offline, a hub id that is not in the local cache stops here, before any library tries (and retries) the network."""
    if offline_reason() is not None and not in_hub_cache(repo_id, filename, revision):
        raise model_not_found(what, repo_id, local_kind=LOCAL_MODEL, tiny=tiny)


def resolve_file(name: str, what: str, revision: str | None = None) -> Path:
    """A local file, or a hub file ``owner/repo/path/in/repo.ext`` (downloaded, or taken from the cache)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    parts = name.split("/")
    if len(parts) < 3:
        raise EaselError(f"{what}: '{name}' is not a file, nor a hub file like 'owner/repo/file.safetensors'.")
    from huggingface_hub import hf_hub_download

    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    with hub_errors(what, name):
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=local_files_only(None)))


@contextmanager
def hub_errors(what: str, name: str) -> Iterator[None]:
    """Turn hub / file-not-found errors from diffusers and huggingface_hub into one clear EaselError.

    A local path that exists but does not load is named with the library's reason; any other name gets
    ``model_not_found``'s paragraph (what was tried, whether the machine is offline, how to get the model).
    """
    from huggingface_hub.errors import HFValidationError

    try:
        yield
    except (OSError, ValueError) as err:
        text = str(err).lower()
        if not isinstance(err, (OSError, HFValidationError)) and not any(w in text for w in ("offline", "not found", "repo id")):
            raise
        if Path(name).expanduser().exists():
            raise EaselError(f"{what}: could not load '{name}': {library_message(err)} "
                             f"Check that it is a complete {LOCAL_MODEL}.") from err
        raise model_not_found(what, name, local_kind=LOCAL_MODEL, cause=err, hub_files=True) from err


def checkpoint_file(path: Path, allow_pickle: bool) -> Path:
    """A .safetensors checkpoint as is; a pickle one only with ``allow_pickle``, converted once to .safetensors."""
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return path
    if suffix not in PICKLE_SUFFIXES:
        raise EaselError(f"'{path}': unknown checkpoint type '{suffix}'; use a .safetensors file (or a diffusers folder).")
    if not allow_pickle:
        raise EaselError(f"'{path}' is a pickle checkpoint ({suffix}), which can run arbitrary code when loaded. "
                         "Use a .safetensors version, or set model.allow_pickle: true to load it with torch.load(weights_only=True).")
    return _convert_pickle(path)


def read_pickle_state_dict(path: Path) -> "dict[str, torch.Tensor]":
    """Load a pickle checkpoint with ``torch.load(weights_only=True)`` and return its tensors."""
    import pickle

    import torch

    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise EaselError(f"'{path}' could not be loaded safely with torch.load(weights_only=True): "
                         f"{str(err).splitlines()[0]} It holds more than tensors; convert it to .safetensors elsewhere.") from err
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise EaselError(f"'{path}' does not hold a state dict (found {type(data).__name__}).")
    return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}


def _convert_pickle(path: Path) -> Path:
    from safetensors.torch import save_file

    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir("converted") / f"{path.stem}-{digest}.safetensors"
    if target.is_file():
        return target
    tensors = {key: value.contiguous().clone() for key, value in read_pickle_state_dict(path).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    save_file(tensors, str(temp))
    os.replace(temp, target)
    log.info(f"Converted the pickle checkpoint {path} to {target}")
    return target


def load_pipeline(pipeline_class: Any, source: ModelSource, dtype: "torch.dtype", **components: Any) -> Any:
    """A diffusers pipeline from a folder or hub id (``from_pretrained``) or a single file (``from_single_file``)."""
    with hub_errors("model.name_or_path", source.path):
        if source.kind == "file":
            return pipeline_class.from_single_file(source.path, config=source.config, dtype=dtype,
                                                   local_files_only=local_files_only(source.config), **components)
        return pipeline_class.from_pretrained(source.path, dtype=dtype, revision=source.revision,
                                              local_files_only=local_files_only(source.path), **components)


def load_denoiser_file_pipeline(pipeline_class: Any, denoiser_class: Any, denoiser: str, source: ModelSource, dtype: "torch.dtype",
                                default_base: str, **components: Any) -> Any:
    """A pipeline whose single-file checkpoints hold only the denoiser (FLUX, Z-Image, ...): the denoiser from the file
    (``from_single_file``, configs from ``model_kwargs.config`` or ``default_base``), the other parts from there too."""
    from toolkit.models.scaled_fp8 import single_file_input

    base = source.config or default_base
    with hub_errors("model.name_or_path", source.path):
        model = denoiser_class.from_single_file(single_file_input(source.path, dtype), config=base, subfolder=denoiser,
                                                dtype=dtype, local_files_only=local_files_only(base))
    base_source = ModelSource("folder" if Path(base).is_dir() else "hub", base, source.revision)
    return load_pipeline(pipeline_class, base_source, dtype, **{denoiser: model}, **components)


def load_vae(vae_path: str, dtype: "torch.dtype", base: ModelSource, revision: str | None = None,
             vae_class: str = "AutoencoderKL") -> Any:
    """A separate VAE (``vae_class``, a diffusers class): a diffusers folder (or one with ``vae/``), a hub id, or a single file."""
    import diffusers

    vae_type = getattr(diffusers, vae_class)
    path = Path(vae_path).expanduser()
    with hub_errors("model.vae_path", vae_path):
        if path.is_dir():
            sub = None if (path / "config.json").is_file() else "vae"
            return vae_type.from_pretrained(str(path), subfolder=sub, dtype=dtype)
        if path.is_file() or vae_path.count("/") >= 2:
            file = resolve_file(vae_path, "model.vae_path", revision)
            config = base.path if base.kind != "file" else base.config
            return vae_type.from_single_file(str(file), config=config, subfolder="vae" if config else None,
                                             dtype=dtype, local_files_only=local_files_only(config))
        _check_hub_cached("model.vae_path", vae_path, revision, "config.json")
        return vae_type.from_pretrained(vae_path, dtype=dtype, revision=revision, local_files_only=local_files_only(vae_path))


def load_denoiser(name: str, model_class: Any, subfolder: str, base: ModelSource, dtype: "torch.dtype") -> Any:
    """``model.unet_path``: a denoiser folder (or a pipeline folder with it in ``subfolder``), a hub id or a single file
    (its config from the base model)."""
    path = Path(name).expanduser()
    with hub_errors("model.unet_path", name):
        if path.is_dir():
            sub = None if (path / "config.json").is_file() else subfolder
            return model_class.from_pretrained(str(path), subfolder=sub, dtype=dtype)
        if path.is_file() or name.count("/") >= 2:
            from toolkit.models.scaled_fp8 import single_file_input

            file = resolve_file(name, "model.unet_path")
            config = base.path if base.kind != "file" else base.config
            return model_class.from_single_file(single_file_input(file, dtype), config=config,
                                                subfolder=subfolder if config else None, dtype=dtype,
                                                local_files_only=local_files_only(config))
        _check_hub_cached("model.unet_path", name, None, f"{subfolder}/config.json")
        return model_class.from_pretrained(name, subfolder=subfolder, dtype=dtype, local_files_only=local_files_only(name))
