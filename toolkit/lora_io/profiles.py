"""Which LoRA naming profile an architecture uses, and guessing the architecture of a file.

An architecture declares its ``LoraProfile`` in its ``ArchSpec(lora=...)`` (see extensions/*/spec.py);
nothing here names an architecture.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Mapping

from toolkit.registry import LoraProfile

if TYPE_CHECKING:
    from toolkit.registry import ArchSpec, Registry

def profile_of(spec: "ArchSpec") -> LoraProfile:
    """The architecture's LoRA profile (its ``ArchSpec.lora``), else the defaults."""
    return spec.lora if spec.lora is not None else LoraProfile()


def all_profiles(registry: "Registry") -> dict[str, LoraProfile]:
    """Architecture name -> profile, for every registered architecture (aliases once)."""
    return {spec.name: profile_of(spec) for spec in registry.archs.values()}


def guess_arch(keys: Iterable[str], metadata: Mapping[str, str], registry: "Registry") -> str | None:
    """The most likely architecture of a LoRA from its metadata, else from its key names; None when unclear."""
    profiles = all_profiles(registry)
    declared = metadata.get("easel.arch", "").partition(":")[0]
    if declared in profiles:
        return declared
    version = metadata.get("ss_base_model_version", "")
    spec_arch = metadata.get("modelspec.architecture", "").partition("/")[0]
    for name, profile in profiles.items():
        if (version and version == profile.base_model_version) or (spec_arch and spec_arch == profile.modelspec_architecture):
            return name
    keys = list(keys)
    scores = {name: sum(1 for pattern in profile.signatures if any(re.search(pattern, key) for key in keys))
              for name, profile in profiles.items()}
    best = max(scores.values(), default=0)
    winners = [name for name, score in scores.items() if score == best]
    return winners[0] if best > 0 and len(winners) == 1 else None
