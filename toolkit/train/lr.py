"""Learning-rate schedules (diffusers.optimization.get_scheduler), stepped once per optimizer step.

``constant`` with ``lr_warmup_steps`` > 0 becomes ``constant_with_warmup`` (a warm-up that was asked for is
never silently dropped). ``lr_scheduler_params`` takes ``num_cycles`` (cosine_with_restarts: how many
times the cosine restarts) and ``power`` (polynomial); any other key, or one the schedule does not use, is
an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError

if TYPE_CHECKING:
    import torch

SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial")
"""Every schedule name ``build_scheduler`` knows; the config's ``train.lr_scheduler`` type is made from it."""
_PARAMS = {"num_cycles": "cosine_with_restarts", "power": "polynomial"}


def build_scheduler(name: str, optimizer: "torch.optim.Optimizer", *, warmup_steps: int, total_steps: int,
                    params: dict[str, Any]) -> "torch.optim.lr_scheduler.LambdaLR":
    """The schedule ``name`` over ``total_steps`` optimizer steps.

    Raises:
        EaselError: unknown schedule or ``lr_scheduler_params`` key.
    """
    from diffusers.optimization import get_scheduler

    if name not in SCHEDULERS:
        raise EaselError(f"unknown lr_scheduler '{name}'. Valid: {', '.join(SCHEDULERS)}.")
    unknown = [key for key in params if key not in _PARAMS]
    if unknown:
        raise EaselError(f"train.lr_scheduler_params: {', '.join(unknown)} not known. Valid: {', '.join(_PARAMS)}.")
    unused = [key for key in params if _PARAMS[key] != name]
    if unused:
        raise EaselError(f"train.lr_scheduler_params: {', '.join(f'{k} is for {_PARAMS[k]}' for k in unused)}, "
                         f"not for lr_scheduler {name}.")
    if name == "constant" and warmup_steps > 0:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, **params)
