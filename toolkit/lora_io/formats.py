"""Key layouts of LoRA files: canonical modules <-> kohya, comfy, diffusers / PEFT tensors.

- ``kohya``: ``lora_unet_<flat module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (LyCORIS
  tensors and full modules' ``.diff`` / ``.diff_b`` keep their names, DoRA adds ``.dora_scale``), prefixes from the architecture's profile;
  what AUTOMATIC1111 and ComfyUI read. Other tools' spellings load too: ``lora_te1_`` for SD 1.x
  (diffusers' converter), OneTrainer's ``lora_transformer_``, LyCORIS' ``lycoris_``.
- ``comfy``: ``diffusion_model.<module>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha`` (the UNet
  in SGM names), text encoders under ``text_encoders.<name>...``; ai-toolkit writes the same.
- ``diffusers`` (alias ``peft``): ``<component>.<module>.lora_A.weight`` / ``.lora_B.weight`` and
  the PEFT ``LoraConfig`` of each component in the header (``lora_adapter_metadata``), as
  ``save_lora_weights`` writes; LoHa/LoKr modules keep LyCORIS names with ``.alpha`` tensors.
  The older diffusers spellings (``.lora.down.weight``, ``processor``) load through diffusers' own converters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.lora_io.keys import COMMON_TENSORS, FULL_TENSORS, LOHA_TENSORS, LOKR_TENSORS, LoraModule
from toolkit.lora_io.namer import Namer

if TYPE_CHECKING:
    import torch

FORMATS = ("kohya", "comfy", "diffusers", "peft")
ADAPTER_METADATA_KEY = "lora_adapter_metadata"
PEFT_CONFIG_KEY = "easel.peft_adapter_config"
"""Where the text of peft's adapter_config.json (r, lora_alpha, patterns) is kept while reading its file."""
TO_KOHYA = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}
FROM_EXTERNAL = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight",
                 "lora_A.weight": "lora_A.weight", "lora_B.weight": "lora_B.weight",
                 **{name: name for name in LOHA_TENSORS + LOKR_TENSORS + FULL_TENSORS + COMMON_TENSORS}}
OLD_DIFFUSERS_MARKERS = (".lora.down.weight", ".lora.up.weight", "_lora.down.weight", "_lora.up.weight",
                         ".lora_linear_layer.", ".processor.")
Tensors = dict[str, "torch.Tensor"]


def detect_format(keys: list[str]) -> str:
    """The key layout of a file: kohya, onetrainer, lycoris, comfy, diffusers-old, peft or diffusers."""
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return "kohya"
    if any(k.startswith("lora_transformer_") for k in keys):
        return "onetrainer"
    if any(k.startswith("lycoris_") for k in keys):
        return "lycoris"
    if any(k.startswith(("diffusion_model.", "text_encoders.")) for k in keys):
        return "comfy"
    if any(marker in k for k in keys for marker in OLD_DIFFUSERS_MARKERS):
        return "diffusers-old"
    if any(k.startswith("base_model.model.") for k in keys):
        return "peft"
    return "diffusers"


# ----------------------------------------------------------------------------------------- writing


def _dora_external(module: LoraModule, value: "torch.Tensor") -> "torch.Tensor":
    """Flat magnitude -> kohya/LyCORIS shape ([out, 1] or [out, 1, 1, 1])."""
    return value.reshape(-1, *([1] * (3 if module.is_conv else 1)))


def _external_tensors(module: LoraModule) -> Tensors:
    """The module's tensors with ``alpha`` always present (kohya's loaders assume alpha = rank otherwise)."""
    import torch

    tensors = dict(module.tensors)
    if module.kind == "full":  # ``diff`` / ``diff_b`` as they are: no alpha (ComfyUI and A1111 add ``diff`` unscaled)
        return {key: value for key, value in tensors.items() if key != "alpha"}
    tensors.setdefault("alpha", torch.tensor(float(module.alpha)))
    if "dora_scale" in tensors:
        tensors["dora_scale"] = _dora_external(module, tensors["dora_scale"])
    return tensors


def written_name(module: LoraModule, fmt: str, namer: Namer) -> str:
    """The module's name in a file of format ``fmt`` (its keys are this plus ``.<tensor>``)."""
    if fmt == "kohya":
        flat = namer.to_flat(module.component, module.name, file_names=namer.profile.kohya_denoiser_names)
        return f"{namer.kohya_prefix(module.component)}_{flat}"
    if fmt == "comfy":
        return f"{namer.comfy_prefix(module.component)}.{namer.external_name(module.component, module.name, file_names=True)}"
    return module.key


def write_kohya(modules: dict[str, LoraModule], namer: Namer) -> Tensors:
    """Canonical modules -> kohya keys (the profile's denoiser names, e.g. SGM ones, where kohya uses them)."""
    out: Tensors = {}
    for module in modules.values():
        base = written_name(module, "kohya", namer)
        for tensor, value in _external_tensors(module).items():
            out[f"{base}.{TO_KOHYA.get(tensor, tensor)}"] = value
    return out


def write_comfy(modules: dict[str, LoraModule], namer: Namer) -> Tensors:
    """Canonical modules -> ComfyUI keys (``diffusion_model.`` + module path, SGM names for a UNet)."""
    out: Tensors = {}
    for module in modules.values():
        base = written_name(module, "comfy", namer)
        for tensor, value in _external_tensors(module).items():
            out[f"{base}.{tensor}"] = value
    return out


def peft_config_kwargs(modules: list[LoraModule]) -> dict[str, Any]:
    """PEFT ``LoraConfig`` arguments reproducing each module's rank and alpha exactly."""
    ranks = Counter(m.rank for m in modules)
    alphas = Counter(m.alpha for m in modules)
    rank, alpha = ranks.most_common(1)[0][0], alphas.most_common(1)[0][0]
    return {
        "r": rank, "lora_alpha": alpha, "target_modules": sorted(m.name for m in modules),
        "rank_pattern": {re.escape(m.name): m.rank for m in modules if m.rank != rank},
        "alpha_pattern": {re.escape(m.name): m.alpha for m in modules if m.alpha != alpha},
        "use_dora": any(m.dora for m in modules), "lora_dropout": 0.0, "bias": "none",
    }


def peft_magnitude(module: LoraModule) -> "torch.Tensor":
    """Flat DoRA magnitude -> PEFT's ``lora_magnitude_vector`` shape ([out], or [1, out, 1, 1] for convs)."""
    value = module.tensors["dora_scale"]
    return value.reshape(1, -1, 1, 1) if module.is_conv else value.reshape(-1)


def write_diffusers(modules: dict[str, LoraModule]) -> tuple[Tensors, dict[str, str]]:
    """Canonical modules -> diffusers/PEFT keys and the ``lora_adapter_metadata`` header entry."""
    out: Tensors = {}
    configs: dict[str, Any] = {}
    by_component: dict[str, list[LoraModule]] = {}
    for module in modules.values():
        base = f"{module.component}.{module.name}"
        if module.kind == "lora":
            by_component.setdefault(module.component, []).append(module)
            out[f"{base}.lora_A.weight"] = module.tensors["lora_A.weight"]
            out[f"{base}.lora_B.weight"] = module.tensors["lora_B.weight"]
            if module.dora:
                out[f"{base}.lora_magnitude_vector"] = peft_magnitude(module)
            continue
        for tensor, value in _external_tensors(module).items():
            out[f"{base}.{tensor}"] = value
    for component, group in by_component.items():
        configs.update({f"{component}.{key}": value for key, value in peft_config_kwargs(group).items()})
    return out, ({ADAPTER_METADATA_KEY: json.dumps(configs, sort_keys=True)} if configs else {})


def write(modules: dict[str, LoraModule], fmt: str, namer: Namer) -> tuple[Tensors, dict[str, str]]:
    """Canonical modules -> (tensors, format-specific header entries) in format ``fmt``."""
    if fmt == "kohya":
        return write_kohya(modules, namer), {}
    if fmt == "comfy":
        return write_comfy(modules, namer), {}
    if fmt in ("diffusers", "peft"):
        return write_diffusers(modules)
    raise EaselError(f"unknown LoRA format '{fmt}'; valid: {', '.join(FORMATS)}.")
