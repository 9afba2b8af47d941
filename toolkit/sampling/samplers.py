"""Sampler names used in configs -> diffusers schedulers, and their names in A1111's metadata."""

from __future__ import annotations

from typing import Any

from toolkit.config.messages import suggest
from toolkit.errors import EaselError

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddpm": ("DDPMScheduler", {}),
    "flowmatch": ("FlowMatchEulerDiscreteScheduler", {}),
}
"""Sampler -> (diffusers scheduler class, settings). dpm++ is DPM-Solver++ 2M."""

A1111_NAMES = {"euler": "Euler", "euler_a": "Euler a", "ddim": "DDIM", "dpm++": "DPM++ 2M", "ddpm": "DDPM", "flowmatch": "Euler"}
"""How A1111 writes each sampler in its ``parameters`` text."""


def check_sampler(name: str, valid: tuple[str, ...] | list[str], arch_name: str) -> None:
    """Raise EaselError when ``name`` is not one of the architecture's samplers."""
    if name not in valid:
        raise EaselError(f"sampler '{name}' does not fit architecture '{arch_name}'{suggest(name, list(valid)) or '.'} "
                         f"Valid: {', '.join(valid)}.")


def make_scheduler(name: str, base_config: Any, **overrides: Any) -> Any:
    """A fresh diffusers scheduler for ``name``, built from the model's own scheduler config."""
    import diffusers

    class_name, settings = SAMPLERS[name]
    return getattr(diffusers, class_name).from_config(base_config, **settings, **overrides)
