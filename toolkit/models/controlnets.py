"""ControlNet models: where one comes from, its config (read without loading weights, so the dry run can check it),
whether it fits an architecture (``ArchSpec.controlnet``, data), and loading it as the class that architecture names.

A ControlNet fits when its config names the architecture's ControlNet class (or union class), has the values the
profile lists (``config_values``; SDXL's ``addition_embed_type: text_time``) and, once the base is known, shares the
denoiser's ``shared_config`` values (e.g. ``cross_attention_dim``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

from toolkit.errors import EaselError
from toolkit.models.hub import hub_cached_file, local_files_only, looks_like_hub_id, not_found_text, offline_reason
from toolkit.models.loading import SAFE_SUFFIXES, hub_errors, resolve_file

if TYPE_CHECKING:
    import torch

    from toolkit.config.blocks import ModelConfig
    from toolkit.models.base import ControlNetSource
    from toolkit.registry import ArchSpec, ControlNetProfile

Kind = Literal["folder", "file", "hub"]
WHAT = "controlnets[].path"
"""The key a ControlNet's location is given under (in generate, sample and each evaluate variant)."""
LOCAL_CONTROLNET = "diffusers ControlNet folder or .safetensors file"
"""What a local ControlNet must be (for error messages)."""


def source_kind(path: str) -> Kind:
    """Whether ``path`` names a diffusers folder, a single file (local or on the hub) or a hub model."""
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise EaselError(f"the folder '{path}' is not a diffusers ControlNet (no config.json in it).")
        return "folder"
    if local.is_file() or (path.count("/") >= 2 and path.lower().endswith(SAFE_SUFFIXES)):
        if not path.lower().endswith(SAFE_SUFFIXES):
            raise EaselError(f"'{path}' is not a .safetensors file; give a ControlNet as .safetensors, a folder or a hub id.")
        return "file"
    if looks_like_hub_id(path):
        return "hub"
    raise EaselError(not_found_text(WHAT, path, local_kind=LOCAL_CONTROLNET, hub_files=True, label="the ControlNet"))


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _config_at(where: str, download: bool) -> dict[str, Any] | None:
    """config.json of a folder or hub id; from the hub only when cached, unless ``download``."""
    local = Path(where).expanduser()
    if local.is_dir():
        return _json(local / "config.json") if (local / "config.json").is_file() else None
    cached = hub_cached_file(where, "config.json")
    if cached is not None or not download or offline_reason() is not None:
        return _json(cached) if cached is not None else None
    from huggingface_hub import hf_hub_download

    with hub_errors(WHAT, where):
        return _json(Path(hf_hub_download(where, "config.json")))


def read_config(source: "ControlNetSource", download: bool = False) -> dict[str, Any] | None:
    """The ControlNet's config.json, or None where it cannot be read without downloading weights (or at all)."""
    kind = source_kind(source.path)
    if kind == "file":
        return _config_at(source.config, download) if source.config else None
    return _config_at(source.path, download)


def fit_problem(config: dict[str, Any], spec: "ArchSpec") -> str | None:
    """Why a ControlNet with ``config`` does not fit architecture ``spec``; None when it does."""
    profile = spec.controlnet
    if profile is None:
        return f"architecture '{spec.name}' takes no ControlNets"
    classes = [name for name in (profile.model, profile.union_model) if name]
    found = config.get("_class_name")
    if found is not None and found not in classes:
        return f"it is a {found}, and '{spec.name}' takes {' or '.join(classes)}"
    for key, wanted in profile.config_values.items():
        if config.get(key) != wanted:
            return f"its config has {key} {config.get(key)!r}, where '{spec.name}' ControlNets have {wanted!r}"
    return None


def shared_problem(config: Any, denoiser_config: Any, profile: "ControlNetProfile") -> str | None:
    """Why a ControlNet's config and the loaded denoiser's disagree on what they must share; None when they agree."""
    def get(source: Any, key: str) -> Any:
        value = source.get(key) if isinstance(source, dict) else getattr(source, key, None)
        return list(value) if isinstance(value, (list, tuple)) else value

    for key in profile.shared_config:
        if get(config, key) != get(denoiser_config, key):
            return (f"its {key} is {get(config, key)!r} but the base model's is {get(denoiser_config, key)!r} "
                    "(it was trained for another base model)")
    return None


def fitting_archs(config: dict[str, Any], specs: Iterable["ArchSpec"]) -> list[str]:
    """The architectures (of ``specs``) a ControlNet with ``config`` fits."""
    return sorted({spec.name for spec in specs if fit_problem(config, spec) is None})


def denoiser_config(model: "ModelConfig", spec: "ArchSpec") -> dict[str, Any] | None:
    """The base model's denoiser config.json where it is on disk (a diffusers folder, or a hub model in the cache)."""
    name = model.name_or_path.strip()
    local = Path(name).expanduser()
    if local.is_dir():
        path = local / spec.denoiser / "config.json"
        return _json(path) if path.is_file() else None
    if name.count("/") == 1 and not name.lower().endswith(SAFE_SUFFIXES):
        cached = hub_cached_file(name, f"{spec.denoiser}/config.json", model.revision)
        return _json(cached) if cached is not None else None
    return None


def is_union(model: Any, profile: "ControlNetProfile") -> bool:
    """Whether a loaded ControlNet is its architecture's union kind (a control mode per image)."""
    return bool(profile.union_model) and type(model).__name__ == profile.union_model


def load(source: "ControlNetSource", spec: "ArchSpec", denoiser_config: Any, dtype: "torch.dtype") -> Any:
    """The ControlNet as ``spec``'s (union) ControlNet class (``from_pretrained`` / ``from_single_file``), checked
    against the architecture and the loaded denoiser's config: before its weights load where its config.json can be
    read, else after."""
    from toolkit.models.loading import diffusers_class

    profile = spec.controlnet
    if profile is None:
        raise EaselError(f"architecture '{spec.name}' takes no ControlNets.")
    kind = source_kind(source.path)
    config = read_config(source, download=True)
    if config is not None:
        _raise_misfit(source, spec, fit_problem(config, spec) or shared_problem(config, denoiser_config, profile))
    union = bool(profile.union_model) and (config or {}).get("_class_name") == profile.union_model
    model_class = diffusers_class(profile.union_model if union else profile.model)
    with hub_errors(WHAT, source.path):
        if kind == "file":
            model = _single_file(model_class, resolve_file(source.path, WHAT), source, dtype)
        else:
            where = str(Path(source.path).expanduser()) if kind == "folder" else source.path
            model = model_class.from_pretrained(where, dtype=dtype, local_files_only=local_files_only(where))
    _raise_misfit(source, spec, fit_problem(dict(model.config), spec) or shared_problem(model.config, denoiser_config, profile))
    return model


def _single_file(model_class: Any, file: Path, source: "ControlNetSource", dtype: "torch.dtype") -> Any:
    """``from_single_file``; weights its converter leaves out (diffusers does not map SDXL's ``label_emb`` from the
    original ControlNet layout) are one clear error instead of torch's meta-tensor one."""
    try:
        return model_class.from_single_file(str(file), config=source.config, dtype=dtype,
                                            local_files_only=local_files_only(source.config))
    except NotImplementedError as err:
        if "meta tensor" not in str(err):
            raise
        raise EaselError(f"controlnets: the single file '{file}' lacks weights {model_class.__name__} needs (diffusers' "
                         "single-file conversion left some out; for SDXL that is the original layout's label_emb). Use the "
                         "ControlNet's diffusers folder or hub id (config.json + diffusion_pytorch_model.safetensors) "
                         "instead.") from None


def _raise_misfit(source: "ControlNetSource", spec: "ArchSpec", problem: str | None) -> None:
    if problem:
        raise EaselError(f"controlnets: '{source.path}' does not fit this {spec.name} model: {problem}. Use a ControlNet "
                         f"trained for {spec.name} (and for this base model).")
