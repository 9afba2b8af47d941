"""Where a base model comes from, and loading it into its architecture's adapter.

``model.name_or_path`` may be a hub id (``owner/name``), a local diffusers folder, a single-file
checkpoint (``.safetensors``; a pickle ``.ckpt``/``.pt``/``.bin`` only with ``allow_pickle``), a
hub file (``owner/name/file.safetensors``) or ``tiny:<arch>``, a tiny random model built in code by the
architecture's ``ArchSpec.tiny`` builder and cached under ``output/.tiny/<arch>/``. Nothing here knows an architecture: adapters call
``resolve_source`` and ``load_pipeline`` with their own pipeline classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from toolkit.errors import EaselError
from toolkit.log import log

if TYPE_CHECKING:
    import torch

    from toolkit.config.blocks import ModelConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.registry import ArchRef, Registry

SAFE_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
TINY_PREFIX = "tiny:"
TINY_SEED = 1234


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


def load_model(config: "ModelConfig", arch: "ArchRef", *, device: "torch.device", dtype: "torch.dtype") -> "ModelAdapter":
    """Load ``config`` into ``arch``'s adapter class (imported only now); the trainer's model loader."""
    from toolkit.models.memory import check_applied
    from toolkit.registry import load_object

    adapter_class = load_object(arch.spec.adapter)
    log.info(f"Loading {arch.name} from {config.name_or_path} ({str(dtype).removeprefix('torch.')}, {device})")
    adapter = adapter_class.load(config, arch, device=device, dtype=dtype)
    check_applied(adapter)
    return adapter


def cache_dir(kind: str) -> Path:
    """``$EASEL_CACHE_DIR/.<kind>`` (default ``output/.<kind>``): tiny models, converted checkpoints."""
    return Path(os.environ.get("EASEL_CACHE_DIR", "output")) / f".{kind}"


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _tiny_stamp(builder: Callable[[Path, int], None]) -> dict[str, Any]:
    """What a cached tiny model was built by: the builder and a hash of its folder (the architecture's) and of
    toolkit/testing (the shared pieces and fitted weights). Any change to either rebuilds the cache."""
    import sys

    import toolkit.testing

    digest = hashlib.sha1()
    module_file = getattr(sys.modules.get(builder.__module__), "__file__", None)
    packages = [Path(toolkit.testing.__file__).parent] + ([Path(module_file).parent] if module_file else [])
    for package in packages:
        for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(package).as_posix().encode() + path.read_bytes())
    return {"builder": f"{builder.__module__}:{builder.__qualname__}", "source": digest.hexdigest()[:16], "seed": TINY_SEED}


def tiny_folder(name: str, builder: Callable[[Path, int], None]) -> Path:
    """The cached tiny model ``name``; built (atomically, from a fixed seed) when missing or out of date.

    A lock file serialises builders, so several processes (data-parallel ranks) can ask at once.
    """
    folder = cache_dir("tiny") / name
    marker, stamp = folder / "easel_tiny.json", _tiny_stamp(builder)
    if _fresh(marker, stamp):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / f".{name}.lock"):
        if _fresh(marker, stamp):
            return folder
        temp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
        try:
            builder(temp, TINY_SEED)
            (temp / "easel_tiny.json").write_text(json.dumps(stamp), encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(temp, folder)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    log.info(f"Built the tiny '{name}' model in {folder}")
    return folder


def _fresh(marker: Path, stamp: dict[str, Any]) -> bool:
    return marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == stamp


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX flock; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is the user's business
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_source(config: "ModelConfig", arch: "ArchRef") -> ModelSource:
    """Turn ``name_or_path`` into a folder, hub id or single file; raise EaselError when it cannot be used."""
    name = config.name_or_path.strip()
    extra = dict(config.model_kwargs)
    if name.lower().startswith(TINY_PREFIX):
        return ModelSource("folder", str(_tiny_source(name[len(TINY_PREFIX):], arch)))
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
        _check_hub_cached(name, config.revision)
        return ModelSource("hub", name, config.revision)
    raise EaselError(f"model.name_or_path: '{name}' is not a local folder or file, nor a hub id like 'owner/name'.")


def _tiny_source(name: str, arch: "ArchRef") -> Path:
    wanted = name.strip().lower().partition(":")[0]
    if wanted not in (arch.spec.name, *arch.spec.aliases):
        raise EaselError(f"model.name_or_path: 'tiny:{name}' is a tiny '{wanted}' model but model.arch is '{arch.name}'; "
                         f"use 'tiny:{arch.spec.name}'.")
    return tiny_folder(arch.spec.name, tiny_builder(arch))


def tiny_builder(arch: "ArchRef") -> Callable[[Path, int], None]:
    """The function that writes ``arch``'s tiny model (its ``ArchSpec.tiny``), imported only now."""
    from toolkit.registry import load_object

    if arch.spec.tiny is None:
        raise EaselError(f"architecture '{arch.spec.name}' has no tiny built-in model.")
    return load_object(arch.spec.tiny.builder)


def _check_hub_cached(repo_id: str, revision: str | None, filename: str = "model_index.json") -> None:
    if not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str):
        raise EaselError(f"'{repo_id}' is not a local path, and as a Hugging Face hub id it is not in the local cache while "
                         "HF_HUB_OFFLINE is set (no downloads). Download it first (`hf download "
                         f"{repo_id}`) or point name_or_path at a local folder or .safetensors file.")


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
        return Path(hf_hub_download(repo_id, filename, revision=revision))


@contextmanager
def hub_errors(what: str, name: str) -> Iterator[None]:
    """Turn hub / file-not-found errors from diffusers and huggingface_hub into one clear EaselError."""
    from huggingface_hub.errors import HFValidationError

    try:
        yield
    except (OSError, ValueError) as err:
        text = str(err).lower()
        if not isinstance(err, (OSError, HFValidationError)) and not any(w in text for w in ("offline", "not found", "repo id")):
            raise
        offline = " HF_HUB_OFFLINE is set, so nothing is downloaded;" if hub_offline() else ""
        raise EaselError(f"{what}: could not load '{name}':{offline} {str(err).splitlines()[0]} "
                         "Check the path or hub id, or download it first.") from err


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
                                                   local_files_only=hub_offline(), **components)
        return pipeline_class.from_pretrained(source.path, dtype=dtype, revision=source.revision, **components)


def load_vae(vae_path: str, dtype: "torch.dtype", base: ModelSource, revision: str | None = None) -> Any:
    """A separate AutoencoderKL: a diffusers folder (or one with ``vae/``), a hub id, or a single file."""
    from diffusers import AutoencoderKL

    path = Path(vae_path).expanduser()
    with hub_errors("model.vae_path", vae_path):
        if path.is_dir():
            sub = None if (path / "config.json").is_file() else "vae"
            return AutoencoderKL.from_pretrained(str(path), subfolder=sub, dtype=dtype)
        if path.is_file() or vae_path.count("/") >= 2:
            file = resolve_file(vae_path, "model.vae_path", revision)
            config = base.path if base.kind != "file" else base.config
            return AutoencoderKL.from_single_file(str(file), config=config, subfolder="vae" if config else None,
                                                  dtype=dtype, local_files_only=hub_offline())
        _check_hub_cached(vae_path, revision, "config.json")
        return AutoencoderKL.from_pretrained(vae_path, dtype=dtype, revision=revision)
