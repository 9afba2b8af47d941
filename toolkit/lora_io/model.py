"""A LoRA against a loaded model: which modules it targets, whether they fit, and weight deltas.

The update of a module is computed by the library that defines it: ``alpha / r * B @ A`` for
LoRA (PEFT's convention), lycoris-lora's own module classes for LoHa and LoKr; a full module's is its ``diff``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.lora_io.keys import LoraModule
from toolkit.network.layers import full_shape
from toolkit.network.targets import base_layer

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter




def target_layer(components: "dict[str, torch.nn.Module]", module: LoraModule) -> "torch.nn.Module | None":
    """The Linear / Conv layer a LoRA module adapts, or None when the model has no such layer."""
    parent = components.get(module.component)
    if parent is None:
        return None
    try:
        layer = base_layer(parent.get_submodule(module.name))
    except AttributeError:
        return None
    return layer if getattr(layer, "weight", None) is not None and layer.weight.dim() in (2, 3, 4) else None


def _fits(module: LoraModule, weight_shape: tuple[int, ...]) -> bool:
    if module.kind == "full":
        return tuple(module.tensors["diff"].shape) == weight_shape
    if module.kind == "lora":
        down = module.tensors["lora_A.weight"]
        return tuple(down.shape[1:]) == tuple(weight_shape[1:]) and module.out_features == weight_shape[0]
    return module.out_features == weight_shape[0]


def mismatches(modules: dict[str, LoraModule], adapter: "ModelAdapter") -> list[str]:
    """One line per module that has no layer in the model or whose shapes do not fit it."""
    components = adapter.components()
    problems: list[str] = []
    for module in modules.values():
        shown = module.source or module.key
        if module.component not in components:
            problems.append(f"{shown} (the model has no component '{module.component}'; it has {', '.join(components)})")
            continue
        layer = target_layer(components, module)
        if layer is None:
            problems.append(f"{shown} (no layer '{module.name}' in {module.component})")
        elif not _fits(module, full_shape(layer) if module.kind == "full" else tuple(layer.weight.shape)):
            problems.append(f"{shown} (shapes do not fit {module.component}.{module.name} {tuple(layer.weight.shape)})")
    return problems


def check_fits(modules: dict[str, LoraModule], adapter: "ModelAdapter", label: str) -> None:
    """Raise EaselError listing every module that matches no layer of the model."""
    problems = mismatches(modules, adapter)
    if problems:
        shown = "; ".join(problems[:12]) + (f"; and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise EaselError(f"LoRA '{label}' does not fit this {adapter.arch.name} model: {len(problems)} module(s) "
                         f"match nothing or do not fit: {shown}.")


def lycoris_module(module: LoraModule, layer: "torch.nn.Module", multiplier: float = 1.0) -> Any:
    """A lycoris-lora LoHa/LoKr module for ``layer`` with this module's weights (not yet hooked in)."""
    import torch
    from lycoris.modules import get_module, make_module

    name = "lycoris_" + module.key.replace(".", "_")
    tensors = dict(module.tensors)
    tensors.setdefault("alpha", torch.tensor(float(module.alpha)))
    if "dora_scale" in tensors:
        tensors["dora_scale"] = tensors["dora_scale"].reshape(-1, *([1] * (layer.weight.dim() - 1)))
    state = {f"{name}.{key}": value.float() for key, value in tensors.items()}
    kind, params = get_module(state, name)
    made = make_module(kind, params, name, layer) if kind is not None else None
    if made is None:
        raise EaselError(f"lycoris-lora cannot build module '{module.key}' ({module.kind}) from its tensors.")
    made.multiplier = multiplier
    return made.to(layer.weight.device)


def lycoris_merged_weight(lyco: Any, multiplier: float) -> "torch.Tensor":
    """The weight a lycoris module's forward acts with at ``multiplier`` (DoRA included)."""
    base = lyco.org_module[0].weight.detach()
    diff = lyco.get_weight(lyco.shape).to(base.device, base.dtype) * lyco.scalar.to(base.device, base.dtype)
    if getattr(lyco, "wd", False):
        return lyco.apply_weight_decompose(base + diff, multiplier)
    return base + diff * multiplier


def delta_weight(module: LoraModule, shape: "tuple[int, ...] | None" = None) -> "torch.Tensor":
    """The module's weight update at weight 1 (float32), shaped like the layer's weight.

    ``shape`` is needed for LoHa/LoKr convolutions (their kernel size is not in the tensors); DoRA
    updates depend on the base weight and have no delta of their own.
    """
    import torch

    if module.dora:
        raise EaselError(f"module '{module.key}' is DoRA: its update depends on the base weight, so it cannot be "
                         "turned into a plain LoRA update without the model.")
    t = module.tensors
    if module.kind == "full":
        return t["diff"].float()
    if module.kind == "lora":
        down, up = t["lora_A.weight"].float(), t["lora_B.weight"].float()
        delta = up.flatten(1) @ down.flatten(1) * module.scale
        return delta.reshape(up.shape[0], *down.shape[1:])
    if shape is None:
        if any(v.dim() > 2 for v in t.values()):
            raise EaselError(f"module '{module.key}' is a {module.kind} convolution; its kernel size is only known with the model.")
        shape = (module.out_features, t["hada_w1_b"].shape[1]) if module.kind == "loha" else _lokr_shape(t)
    layer = torch.nn.Linear(shape[1], shape[0], bias=False) if len(shape) == 2 else torch.nn.Conv2d(shape[1], shape[0], tuple(shape[2:]), bias=False)
    lyco = lycoris_module(module, layer)
    with torch.no_grad():
        return (lyco.get_weight(lyco.shape) * lyco.scalar).float().reshape(shape)


def _lokr_shape(t: "dict[str, torch.Tensor]") -> tuple[int, int]:
    first = t["lokr_w1"].shape if "lokr_w1" in t else (t["lokr_w1_a"].shape[0], t["lokr_w1_b"].shape[1])
    second = t["lokr_w2"].shape if "lokr_w2" in t else (t["lokr_w2_a"].shape[0], t["lokr_w2_b"].shape[1])
    return int(first[0] * second[0]), int(first[1] * second[1])
