"""Reading every supported key layout back into canonical modules (see ``formats`` for the layouts).

Keys that fit no layout are never dropped silently: they are reported in one EaselError.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.lora_io.formats import ADAPTER_METADATA_KEY, FROM_EXTERNAL, PEFT_CONFIG_KEY, Tensors
from toolkit.lora_io.keys import LoraModule
from toolkit.lora_io.namer import KOHYA_PREFIXES, Namer

if TYPE_CHECKING:
    import torch

_KOHYA_KEY = re.compile(rf"^({'|'.join(KOHYA_PREFIXES)})_([^.]+)\.(.+)$")
_SUFFIXES = sorted([*FROM_EXTERNAL, "lora_magnitude_vector"], key=len, reverse=True)


def unknown_keys_error(keys: list[str], what: str) -> EaselError:
    shown = ", ".join(sorted(keys)[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
    return EaselError(f"{what}: {len(keys)} key(s) fit no LoRA layout easel reads (kohya, comfy, diffusers/PEFT, "
                      f"LyCORIS): {shown}.")


def _split_suffix(rest: str) -> tuple[str, str] | None:
    """``"a.b.lora_up.weight"`` -> ``("a.b", "lora_up.weight")``."""
    for suffix in _SUFFIXES:
        if rest.endswith("." + suffix):
            return rest[: -len(suffix) - 1], suffix
    return None


def finish_modules(modules: dict[str, LoraModule]) -> dict[str, LoraModule]:
    """Check each module, give it an explicit alpha (the rank when the file has none: scale 1, the kohya and
    diffusers convention) and flatten DoRA magnitudes to [out] (refusing input-axis ones)."""
    import torch

    for module in modules.values():
        module.check()
        if module.kind == "full":
            module.tensors.pop("alpha", None)  # a weight difference has no scale
            continue
        module.tensors.setdefault("alpha", torch.tensor(float(module.alpha)))
        scale = module.tensors.get("dora_scale")
        if scale is None:
            continue
        out = module.out_features
        if scale.numel() != out:
            raise EaselError(f"module '{module.key}': its DoRA magnitude has {scale.numel()} values for {out} outputs "
                             "(LyCORIS' input-axis DoRA, wd_on_out=False), which easel does not support.")
        module.tensors["dora_scale"] = scale.reshape(-1)
    return modules


def _add(modules: dict[str, LoraModule], component: str, name: str, suffix: str, value: "torch.Tensor", source: str) -> None:
    tensor = "dora_scale" if suffix == "lora_magnitude_vector" else FROM_EXTERNAL[suffix]
    modules.setdefault(f"{component}.{name}", LoraModule(component, name, source=source)).tensors[tensor] = value


def read_kohya(raw: Tensors, namer: Namer, what: str) -> dict[str, LoraModule]:
    """kohya / OneTrainer / LyCORIS keys (``<prefix>_<flat name>.<tensor>``)."""
    modules: dict[str, LoraModule] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        match = _KOHYA_KEY.match(key)
        if match is None or match.group(3) not in FROM_EXTERNAL:
            unknown.append(key)
            continue
        component = namer.kohya_component(match.group(1))
        _add(modules, component, namer.from_flat(component, match.group(2)), match.group(3), value, key.split(".")[0])
    if unknown:
        raise unknown_keys_error(unknown, what)
    return finish_modules(modules)


def read_comfy(raw: Tensors, namer: Namer, what: str) -> dict[str, LoraModule]:
    """ComfyUI / ai-toolkit keys (``diffusion_model.<module>.<tensor>``, ``text_encoders.<te>.<module>...``)."""
    modules: dict[str, LoraModule] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        found = namer.comfy_component(key)
        parts = _split_suffix(found[1]) if found is not None else None
        if found is None or parts is None or parts[1] == "lora_magnitude_vector":
            unknown.append(key)
            continue
        component = found[0]
        _add(modules, component, namer.internal_name(component, parts[0]), parts[1], value, key[: -len(parts[1]) - 1])
    if unknown:
        raise unknown_keys_error(unknown, what)
    return finish_modules(modules)


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """PEFT's rank/alpha pattern lookup: a pattern matches the whole name or a dotted suffix of it."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            return value
    return default


def _component_configs(metadata: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``lora_adapter_metadata`` -> {component: LoraConfig kwargs}."""
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    configs: dict[str, dict[str, Any]] = {}
    for key, value in json.loads(raw).items():
        component, _, field = key.partition(".")
        configs.setdefault(component, {})[field] = value
    return configs


def _with_peft_config(metadata: dict[str, str], component: str) -> dict[str, str]:
    """peft's adapter_config.json (kept by ``files.read_file``) as the component's entry of ``lora_adapter_metadata``."""
    text = metadata.get(PEFT_CONFIG_KEY)
    if not text or ADAPTER_METADATA_KEY in metadata:
        return metadata
    config = json.loads(text)
    fields = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "target_modules", "use_dora")
    return {**metadata, ADAPTER_METADATA_KEY: json.dumps({f"{component}.{k}": config[k] for k in fields if k in config})}


def read_diffusers(raw: Tensors, metadata: dict[str, str], what: str) -> dict[str, LoraModule]:
    """``<component>.<module>.lora_A.weight`` keys; alphas from ``.alpha`` tensors or the PEFT config in the header."""
    import torch

    modules: dict[str, LoraModule] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        component, _, rest = key.partition(".")
        parts = _split_suffix(rest) if rest else None
        if parts is None or not parts[0] or parts[1] in ("lora_down.weight", "lora_up.weight"):
            unknown.append(key)
            continue
        _add(modules, component, parts[0], parts[1], value, key[: -len(parts[1]) - 1])
    if unknown:
        raise unknown_keys_error(unknown, what)
    configs = _component_configs(metadata)
    for module in modules.values():
        config = configs.get(module.component)
        if module.kind == "lora" and "alpha" not in module.tensors and config:
            default = float(config.get("lora_alpha", module.rank))
            alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module.name, default))
            module.tensors["alpha"] = torch.tensor(alpha)
    return finish_modules(modules)


def old_diffusers_to_peft(raw: Tensors, what: str = "LoRA") -> Tensors:
    """Older diffusers spellings -> PEFT names, by diffusers' own converters: attention processors
    (``processor.to_q_lora.down``), ``lora_linear_layer`` text encoders, and the ``.lora.down`` / ``.lora.up`` names
    ``convert_state_dict_to_diffusers`` writes (diffusers' example trainers save their LoRAs that way)."""
    from diffusers.utils.state_dict_utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    groups: dict[str, Tensors] = {}
    for key, value in raw.items():
        component, _, rest = key.partition(".")
        groups.setdefault(component, {})[rest] = value
    out: Tensors = {}
    for component, tensors in groups.items():
        if any("lora_linear_layer" in k or "to_out_lora" in k for k in tensors) and not any(".processor." in k for k in tensors):
            try:
                tensors = convert_state_dict_to_peft(convert_state_dict_to_diffusers(tensors))
            except ValueError:
                raise unknown_keys_error([f"{component}.{k}" for k in tensors], what) from None
        converted = convert_unet_state_dict_to_peft(tensors)
        out.update({f"{component}.{key}": value for key, value in converted.items()})
    return out


def read(raw: Tensors, metadata: dict[str, str], fmt: str, namer: Namer, what: str) -> dict[str, LoraModule]:
    """Any detected layout -> canonical modules."""
    if fmt in ("kohya", "onetrainer", "lycoris"):
        return read_kohya(raw, namer, what)
    if fmt == "comfy":
        return read_comfy(raw, namer, what)
    if fmt == "peft":
        prefix = "base_model.model."
        raw = {f"{namer.denoiser}.{k[len(prefix):]}" if k.startswith(prefix) else k: v for k, v in raw.items()}
        metadata = _with_peft_config(metadata, namer.denoiser)
    if fmt == "diffusers-old":
        raw = old_diffusers_to_peft(raw, what)
    renamed = [LoraModule(m.component, namer.internal_name(m.component, m.name), m.tensors, m.source)
               for m in read_diffusers(raw, metadata, what).values()]
    return {module.key: module for module in renamed}
