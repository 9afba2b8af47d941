"""Optimizers by name, from torch, bitsandbytes, prodigyopt and transformers.

- ``adamw`` / ``adam`` / ``sgd``: torch.optim; Adam and AdamW use torch's fused kernel (one kernel for
  every parameter: on the CPU about 6x faster than the default per-tensor loop) when every parameter is a
  float tensor on a CUDA device or the CPU, unless ``optimizer_params`` set ``fused`` or ``foreach``.
- ``adamw8bit`` / ``adam8bit`` / ``lion8bit``: bitsandbytes' 8-bit optimizers (their state is a quarter
  the size). bitsandbytes >= 0.45 runs them on the CPU too, so they are never swapped for something else;
  without bitsandbytes the run stops with an error saying how to install it.
- ``lion``: bitsandbytes' 32-bit Lion.
- ``prodigy``: prodigyopt's Prodigy, which finds its own step size: ``lr`` is a multiplier, usually 1.0.
- ``adafactor``: transformers' Adafactor with the given ``lr`` (``relative_step`` and
  ``scale_parameter`` off unless ``optimizer_params`` turn them on).

``optimizer_params`` are passed to the optimizer as they are; a key it does not take is an error that
lists the ones it does.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

from toolkit.errors import EaselError
from toolkit.log import log

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adamw", "adamw8bit", "adam", "adam8bit", "prodigy", "adafactor", "lion", "lion8bit", "sgd")
"""Every optimizer name ``optimizer_class`` knows; the config's ``train.optimizer`` type is made from it."""

FLAT_OPTIMIZERS = ("adamw", "adam", "adamw8bit", "adam8bit", "lion", "lion8bit", "prodigy")
"""Optimizers that may step one flat tensor per group (``train.flat_optimizer``): their update is elementwise, so
torch's Adam/AdamW and bitsandbytes' Lion give the per-tensor numbers bit for bit. bitsandbytes' 8-bit ones quantize
their state in blocks of 256 values, and every tensor starts a block, so they give the numbers of a per-tensor run
with ``min_8bit_size: 0`` (per tensor, tensors under 4,096 values keep a 32-bit state). Prodigy's step size sums over
all the group's values: the same sums in another order. Not Adafactor (it factors each matrix's moments) nor
SGD (its weight decay enters the momentum of parameters without a gradient)."""


def _bitsandbytes(name: str) -> Any:
    try:
        import bitsandbytes
    except ImportError as err:
        raise EaselError(f"optimizer '{name}' needs bitsandbytes: `pip install bitsandbytes` "
                         f"(or choose adamw). ({err})") from None
    return bitsandbytes.optim


def optimizer_class(name: str) -> tuple[Callable[..., "torch.optim.Optimizer"], dict[str, Any]]:
    """The optimizer constructor for ``name`` and the defaults easel adds."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW, {}
    if name == "adam":
        return torch.optim.Adam, {}
    if name == "sgd":
        return torch.optim.SGD, {}
    if name in ("adamw8bit", "adam8bit", "lion8bit", "lion"):
        attribute = {"adamw8bit": "AdamW8bit", "adam8bit": "Adam8bit", "lion8bit": "Lion8bit", "lion": "Lion"}[name]
        return getattr(_bitsandbytes(name), attribute), {}
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise EaselError("optimizer 'prodigy' needs prodigyopt: `pip install prodigyopt`.") from None
        return Prodigy, {}
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor, {"scale_parameter": False, "relative_step": False, "warmup_init": False}
    raise EaselError(f"unknown optimizer '{name}'. Valid: {', '.join(OPTIMIZERS)}.")


def build_optimizer(name: str, param_groups: list[dict[str, Any]], lr: float, params: dict[str, Any]) -> "torch.optim.Optimizer":
    """Make the optimizer over ``param_groups`` (each may carry its own ``lr``).

    Raises:
        EaselError: unknown optimizer, missing package, or an ``optimizer_params`` key it does not take.
    """
    constructor, defaults = optimizer_class(name)
    accepted = inspect.signature(constructor).parameters
    unknown = [key for key in params if key not in accepted]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        valid = [k for k in accepted if k not in ("self", "params", "lr")]
        raise EaselError(f"train.optimizer_params: {', '.join(unknown)} not taken by {name}. Valid: {', '.join(valid)}.")
    if name == "prodigy" and len({group.get("lr", lr) for group in param_groups}) > 1:
        raise EaselError("prodigy needs one learning rate for every component: leave train.unet_lr and "
                         "train.text_encoder_lr unset (or equal).")
    if name == "prodigy" and lr < 0.1:
        log.warning(f"warning: prodigy sets its own step size and expects lr around 1.0 (a multiplier); lr is {lr:g}.")
    groups = [{key: value for key, value in group.items() if key != "name"} for group in param_groups]
    if name in ("adamw", "adam") and not {"fused", "foreach"} & set(params) and _fusable(groups):
        defaults = {**defaults, "fused": True}
    try:
        return constructor(groups, lr=lr, **{**defaults, **params})
    except (TypeError, ValueError) as err:
        raise EaselError(f"train.optimizer_params do not suit {name}: {err}") from None


def _fusable(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused Adam/AdamW kernel takes every parameter: float tensors, all on CUDA or all on the CPU."""
    params = [param for group in groups for param in group["params"]]
    devices = {param.device.type for param in params}
    return bool(params) and len(devices) == 1 and devices <= {"cuda", "cpu"} and all(p.is_floating_point() for p in params)
