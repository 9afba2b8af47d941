"""LoRA stacks on a loaded model: h = W x + sum_i w_i dW_i x, and baking them into the weights.

Each file becomes its own adapter: a PEFT LoRA adapter (LoRA, LoCon, DoRA) named ``easel_gen_<i>``
scaled by its weight, lycoris-lora module wrappers (LoHa, LoKr) with the weight as multiplier, or hooks adding a
full module's ``diff`` (``toolkit.network.layers.FullDiff``).
Weights may be negative or above 1. Adapters already on the model (a LoRA being trained) stay.
"""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from toolkit.errors import EaselError
from toolkit.lora_io.files import LoraFile, load_lora
from toolkit.lora_io.formats import peft_config_kwargs, peft_magnitude
from toolkit.lora_io.keys import LoraModule
from toolkit.lora_io.model import base_layer, check_fits, lycoris_merged_weight, lycoris_module, target_layer
from toolkit.network.layers import FullDiff

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter

PREFIX = "easel_gen_"
"""Adapter names used here, so other adapters on the model (a LoRA being trained) are left alone."""
LoraSource = Union[str, Path, LoraFile]
_LYCORIS: "weakref.WeakKeyDictionary[Any, list[Any]]" = weakref.WeakKeyDictionary()
"""Adapter -> the lycoris modules hooked into it by ``apply_loras``."""
_APPLIED: "weakref.WeakKeyDictionary[Any, dict[str, list[Any]]]" = weakref.WeakKeyDictionary()
"""Adapter -> component -> (file fingerprint, weight) of each LoRA ``apply_loras`` put on it, in order."""
_BAKED: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
"""Adapter -> components whose weights ``bake_loras`` changed."""


def merge_duplicates(loras: list[tuple[LoraSource, float]]) -> list[tuple[Path | LoraFile, float]]:
    """One entry per file, weights of repeated files summed (the update is linear in the weight)."""
    merged: dict[Any, tuple[Path | LoraFile, float]] = {}
    for source, weight in loras:
        item: Path | LoraFile = source if isinstance(source, LoraFile) else Path(source).expanduser().resolve()
        key = id(item) if isinstance(item, LoraFile) else item
        merged[key] = (item, merged.get(key, (item, 0.0))[1] + float(weight))
    return list(merged.values())


def _as_file(source: Path | LoraFile, adapter: "ModelAdapter") -> LoraFile:
    if isinstance(source, LoraFile):
        check_fits(source.modules, adapter, source.label)
        return source
    if not (source.is_file() or source.is_dir()):
        raise EaselError(f"LoRA file '{source}' does not exist.")
    return load_lora(source, adapter=adapter)


def apply_loras(adapter: "ModelAdapter", loras: list[tuple[LoraSource, float]]) -> list[str]:
    """Load the LoRAs into the adapter's modules and activate them with their weights; returns adapter names.

    Every file is read and checked against the model before anything changes; a module that
    matches no layer is an EaselError naming it.
    """
    remove_loras(adapter)
    sources = merge_duplicates(loras)
    files = [(_as_file(source, adapter), weight) for source, weight in sources]
    names = [f"{PREFIX}{index}" for index in range(len(files))]
    try:
        for name, (lora, weight) in zip(names, files):
            _inject(adapter, lora, name, weight)
    except Exception:
        remove_loras(adapter)
        raise
    applied = _APPLIED.setdefault(adapter, {})
    for (source, weight), (lora, _) in zip(sources, files):
        for component in dict.fromkeys(module.component for module in lora.modules.values()):
            applied.setdefault(component, []).append((_fingerprint(source), weight))
    return names


def applied_to(adapter: "ModelAdapter", component: str) -> "tuple[Any, ...] | None":
    """What ``apply_loras`` has put on ``component`` now, as a hashable stand-in: each LoRA's file (path, size and
    modification time) with its weight, in order; () for none. None when no such stand-in exists: a LoRA given as
    an in-memory ``LoraFile``, or LoRAs baked into the component's weights."""
    if component in _BAKED.get(adapter, set()):
        return None
    entries = _APPLIED.get(adapter, {}).get(component, [])
    if any(fingerprint is None for fingerprint, _ in entries):
        return None
    return tuple(entries)


def _fingerprint(source: "Path | LoraFile") -> "tuple[Any, ...] | None":
    """A LoRA file (or folder) by its path, sizes and modification times; None for an in-memory ``LoraFile``."""
    if not isinstance(source, Path):
        return None
    files = [source] if source.is_file() else sorted(path for path in source.rglob("*") if path.is_file())
    return (str(source), *((str(path.relative_to(source)) if path != source else "", path.stat().st_size,
                            path.stat().st_mtime_ns) for path in files))


def _inject(adapter: "ModelAdapter", lora: LoraFile, name: str, weight: float) -> None:
    components = adapter.components()
    by_component: dict[str, list[LoraModule]] = {}
    hooked = _LYCORIS.setdefault(adapter, [])
    for module in lora.modules.values():
        if module.kind == "lora":
            by_component.setdefault(module.component, []).append(module)
            continue
        layer = target_layer(components, module)
        if module.kind == "full":
            hooked.append(_full_diff(module, layer, name, weight))
            continue
        lyco = lycoris_module(module, layer, weight)
        lyco.easel_adapter_name = name
        lyco.requires_grad_(False)
        lyco.apply_to()
        hooked.append(lyco)
    for component, modules in by_component.items():
        _inject_peft(components[component], modules, name, weight, lora.label)


def _full_diff(module: LoraModule, layer: "torch.nn.Module", name: str, weight: float) -> FullDiff:
    """A full module's difference hooked onto its layer (in the layer's dtype and device)."""
    weight_of = base_layer(layer).weight
    dtype = weight_of.dtype if weight_of.is_floating_point() else None
    diff = module.tensors["diff"].to(weight_of.device, dtype)
    diff_b = module.tensors.get("diff_b")
    added = FullDiff(layer, diff, diff_b.to(weight_of.device, dtype) if diff_b is not None else None, weight)
    added.easel_adapter_name = name  # type: ignore[attr-defined]
    added.apply_to()
    base_layer(layer).__dict__.setdefault("_easel_full_diffs", []).append(added)
    return added


def _tuner_layers(module: "torch.nn.Module") -> dict[str, Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: layer for name, layer in module.named_modules() if isinstance(layer, BaseTunerLayer)}


def _inject_peft(root: "torch.nn.Module", modules: list[LoraModule], name: str, weight: float, label: str) -> None:
    """Add one PEFT LoRA adapter to ``root`` with these modules' weights, active beside the adapters already there."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    if any(m.dora for m in modules) and not all(m.dora for m in modules):
        raise EaselError(f"LoRA '{label}' mixes DoRA and plain LoRA modules in one component, which PEFT cannot load as one adapter.")
    before = {path: list(layer.active_adapters) for path, layer in _tuner_layers(root).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inject_adapter_in_model(LoraConfig(**peft_config_kwargs(modules)), root, adapter_name=name)
    state: dict[str, torch.Tensor] = {}
    for module in modules:
        state[f"{module.name}.lora_A.weight"] = module.tensors["lora_A.weight"]
        state[f"{module.name}.lora_B.weight"] = module.tensors["lora_B.weight"]
        if module.dora:
            state[f"{module.name}.lora_magnitude_vector"] = peft_magnitude(module)
    result = set_peft_model_state_dict(root, state, adapter_name=name)
    missing = [key for key in result.missing_keys if f".{name}." in key]
    if result.unexpected_keys or missing:
        raise EaselError(f"LoRA '{label}': PEFT did not take keys {sorted(result.unexpected_keys + missing)[:8]}.")
    for path, layer in _tuner_layers(root).items():
        active = before.get(path, [])
        if name in _held(layer):
            layer.set_scale(name, weight)
            active = [*active, name]
        if active:
            layer.set_adapter(list(dict.fromkeys(active)))
        for attr in layer.adapter_layer_names:
            adapters = getattr(layer, attr, {})
            if name in adapters:
                adapters[name].requires_grad_(False)


def _held(layer: Any) -> list[str]:
    """Names of the adapters a PEFT layer holds (any PEFT adapter type)."""
    names: dict[str, None] = {}
    for attr in layer.adapter_layer_names:
        names.update(dict.fromkeys(getattr(layer, attr, {})))
    return list(names)


def loaded_loras(pipe: Any) -> list[str]:
    """Names of the adapters ``apply_loras`` loaded into the pipeline's (or adapter's) modules."""
    found: set[str] = set()
    for module in _modules_of(pipe):
        for layer in _tuner_layers(module).values():
            found.update(n for n in _held(layer) if n.startswith(PREFIX))
        for child in module.modules():
            found.update(getattr(w, "easel_adapter_name", "") for w in getattr(child, "_lycoris_wrappers", []))
            found.update(getattr(w, "easel_adapter_name", "") for w in child.__dict__.get("_easel_full_diffs", []))
    found.discard("")
    return sorted(found)


def _modules_of(holder: Any) -> "list[torch.nn.Module]":
    import torch

    if hasattr(holder, "components") and callable(holder.components):
        return list(holder.components().values())
    values = holder.components.values() if isinstance(getattr(holder, "components", None), dict) else []
    return [value for value in values if isinstance(value, torch.nn.Module)]


def remove_loras(adapter: "ModelAdapter") -> None:
    """Unload every LoRA ``apply_loras`` loaded; the base weights and other adapters are untouched.

    Layers left without any adapter get their plain layer back, so the model is as it was loaded.
    """
    _APPLIED.pop(adapter, None)
    for lyco in reversed(_LYCORIS.pop(adapter, [])):
        lyco.restore()
        if isinstance(lyco, FullDiff):
            _drop_full(lyco)
    for module in adapter.components().values():
        for layer in _tuner_layers(module).values():
            ours = [n for n in _held(layer) if n.startswith(PREFIX)]
            others = [n for n in layer.active_adapters if not n.startswith(PREFIX)]
            for name in ours:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layer.delete_adapter(name)
            if ours and others:
                layer.set_adapter(others)
        _unwrap_empty(module)
        _drop_configs(module)


def _drop_configs(module: "torch.nn.Module") -> None:
    """Forget our adapters' PEFT configs (and the attribute, when no other adapter is left)."""
    config = getattr(module, "peft_config", None)
    if isinstance(config, dict):
        for name in [n for n in config if n.startswith(PREFIX)]:
            config.pop(name)
        if not config:
            del module.peft_config


def _unwrap_empty(root: "torch.nn.Module") -> None:
    """Put the plain layer back wherever a PEFT wrapper holds no adapter any more."""
    for path, layer in sorted(_tuner_layers(root).items(), key=lambda item: -item[0].count(".")):
        if not _held(layer):
            root.set_submodule(path, base_layer(layer))


def bake_loras(adapter: "ModelAdapter", loras: list[tuple[LoraSource, float]]) -> list[str]:
    """Merge LoRAs with their weights into the model's weights (the model then holds no adapter layers)."""
    import torch

    names = apply_loras(adapter, loras)
    _BAKED.setdefault(adapter, set()).update(_APPLIED.pop(adapter, {}))
    with torch.no_grad():
        for lyco in _LYCORIS.pop(adapter, []):
            if isinstance(lyco, FullDiff):
                _bake_full(lyco)
                continue
            merged = lycoris_merged_weight(lyco, lyco.multiplier)
            lyco.restore()
            layer = lyco.org_module[0]
            layer.weight.copy_(merged.to(layer.weight.dtype))
        for module in adapter.components().values():
            _merge_peft(module, names)
            _drop_configs(module)
    return names


def _bake_full(added: FullDiff) -> None:
    """W += m * diff and b += m * diff_b, then the hook goes."""
    added.restore()
    _drop_full(added)
    layer = added.layer
    layer.weight.add_((added.multiplier * added.diff.float()).to(layer.weight.dtype))
    if added.diff_b is not None and layer.bias is not None:
        layer.bias.add_((added.multiplier * added.diff_b.float()).to(layer.bias.dtype))


def _drop_full(added: FullDiff) -> None:
    held = added.layer.__dict__.get("_easel_full_diffs", [])
    if added in held:
        held.remove(added)


def _merge_peft(root: "torch.nn.Module", names: list[str]) -> None:
    """Merge our PEFT adapters into their base layers and put the plain layers back in their place."""
    for path, layer in sorted(_tuner_layers(root).items(), key=lambda item: -item[0].count(".")):
        ours = [n for n in names if n in _held(layer)]
        if not ours:
            continue
        others = sorted(set(_held(layer)) - set(ours))
        if others:
            raise EaselError(f"cannot bake LoRAs into '{path}': it also holds other adapters {others}.")
        layer.merge(adapter_names=ours)
        root.set_submodule(path, base_layer(layer))
