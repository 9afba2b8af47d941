"""easel's canonical LoRA state dict: the one in-memory layout every format converts to and from.

Keys are ``"{component}.{module_path}.{tensor}"``: ``component`` as in diffusers pipelines (``unet``,
``transformer``, ``text_encoder``, ``text_encoder_2``), ``module_path`` as in the diffusers /
transformers module, ``tensor`` one of:

- LoRA / LoCon: ``lora_A.weight`` ([r, in] or [r, in, kh, kw]), ``lora_B.weight`` ([out, r] or
  [out, r, 1, 1]), ``alpha`` (0-dim); the update is ``alpha / r * B @ A``;
- DoRA: a LoRA plus ``dora_scale``, the magnitude vector, stored flat ([out]);
- LoHa / LoKr: the LyCORIS tensors (``hada_w1_a`` ... ``lokr_w2_b``, ``hada_t1``, ``lokr_t2``) plus ``alpha``;
- full: ``diff`` (the weight's shape) and ``diff_b`` (the bias's), a full weight difference (ai-toolkit's
  ``full_if_contains``, LyCORIS's "full"); its rank counts as full (min of its sides) and its scale as 1.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from toolkit.errors import EaselError

if TYPE_CHECKING:
    import torch

LORA_TENSORS = ("lora_A.weight", "lora_B.weight")
LOHA_TENSORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_TENSORS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1", "lokr_t2")
FULL_TENSORS = ("diff", "diff_b")
COMMON_TENSORS = ("alpha", "dora_scale")
TENSOR_NAMES = LORA_TENSORS + LOHA_TENSORS + LOKR_TENSORS + FULL_TENSORS + COMMON_TENSORS
NETWORK_TYPES = ("lora", "loha", "lokr", "full")


def split_key(key: str) -> tuple[str, str, str]:
    """``"unet.down_blocks.0.to_q.lora_A.weight"`` -> ``("unet", "down_blocks.0.to_q", "lora_A.weight")``."""
    for tensor in TENSOR_NAMES:
        if key.endswith("." + tensor):
            head = key[: -len(tensor) - 1]
            component, _, module = head.partition(".")
            if component and module:
                return component, module, tensor
    raise EaselError(f"'{key}' is not a LoRA tensor name easel knows (expected '<component>.<module>.<tensor>' "
                     f"with tensor one of {', '.join(TENSOR_NAMES)}).")


@dataclass
class LoraModule:
    """The tensors of one adapted module."""

    component: str
    name: str
    tensors: "dict[str, torch.Tensor]" = field(default_factory=dict)
    source: str = ""
    """The module's name in the file it was read from (for conversion reports)."""

    @property
    def key(self) -> str:
        """``component.module_path``."""
        return f"{self.component}.{self.name}"

    @property
    def kind(self) -> str:
        """lora, loha, lokr or full (DoRA is a lora with ``dora``)."""
        if "diff" in self.tensors:
            return "full"
        if any(t in self.tensors for t in LOHA_TENSORS):
            return "loha"
        if any(t in self.tensors for t in LOKR_TENSORS):
            return "lokr"
        return "lora"

    @property
    def dora(self) -> bool:
        return "dora_scale" in self.tensors

    @property
    def is_conv(self) -> bool:
        """Adapts a convolution (4-D tensors)."""
        return any(t.dim() == 4 for t in self.tensors.values())

    @property
    def is_spatial(self) -> bool:
        """Adapts a convolution with a kernel larger than 1x1 (kohya's ``conv_dim`` layers)."""
        return any(t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1 for t in self.tensors.values()) or (
            self.kind in ("loha", "lokr") and any(t.dim() == 4 for t in self.tensors.values()))

    @property
    def rank(self) -> int:
        """The rank: rows of A (LoRA), of ``hada_w1_b`` (LoHa), of the decomposed LoKr factor (1 when full)."""
        t = self.tensors
        if self.kind == "lora":
            return int(t["lora_A.weight"].shape[0])
        if self.kind == "full":
            return int(min(t["diff"].shape[0], t["diff"][0].numel()))
        if self.kind == "loha":
            return int(t["hada_w1_b"].shape[0])
        if "lokr_w1_a" in t:
            return int(t["lokr_w1_a"].shape[1])
        if "lokr_w2_a" in t:
            return int(t["lokr_w2_a"].shape[0 if "lokr_t2" in t else 1])
        return 1

    @property
    def out_features(self) -> int:
        """Output features (channels) of the adapted layer, from the tensors."""
        t = self.tensors
        if self.kind == "lora":
            return int(t["lora_B.weight"].shape[0])
        if self.kind == "full":
            return int(t["diff"].shape[0])
        if self.kind == "loha":
            return int(t["hada_w1_a"].shape[1 if "hada_t1" in t else 0])
        first = t["lokr_w1"].shape[0] if "lokr_w1" in t else t["lokr_w1_a"].shape[0]
        second = t["lokr_w2"].shape[0] if "lokr_w2" in t else t["lokr_w2_a"].shape[1 if "lokr_t2" in t else 0]
        return int(first * second)

    @property
    def alpha(self) -> float:
        """Alpha; when the file has none, the rank (scale 1, the diffusers/PEFT and kohya convention)."""
        value = self.tensors.get("alpha")
        return float(value.item()) if value is not None and self.kind != "full" else float(self.rank)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def check(self) -> None:
        """Raise EaselError when the module's tensors do not make a complete adapter."""
        kind = self.kind
        names = set(self.tensors) - set(COMMON_TENSORS)
        if kind == "lora" and names != set(LORA_TENSORS):
            raise EaselError(f"LoRA module '{self.key}' has tensors {sorted(self.tensors)}; a LoRA needs lora_A.weight and lora_B.weight.")
        if kind == "loha" and not {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= names:
            raise EaselError(f"LoHa module '{self.key}' lacks some of hada_w1_a/w1_b/w2_a/w2_b (has {sorted(self.tensors)}).")
        if kind == "lokr" and not (("lokr_w1" in names or {"lokr_w1_a", "lokr_w1_b"} <= names)
                                   and ("lokr_w2" in names or {"lokr_w2_a", "lokr_w2_b"} <= names)):
            raise EaselError(f"LoKr module '{self.key}' lacks its w1 or w2 factor (has {sorted(self.tensors)}).")
        if names & set(LOHA_TENSORS) and names & set(LOKR_TENSORS):
            raise EaselError(f"module '{self.key}' mixes LoHa and LoKr tensors.")
        if kind == "full" and names - set(FULL_TENSORS):
            raise EaselError(f"full module '{self.key}' mixes a weight difference (diff) with other tensors {sorted(names)}.")
        if kind != "full" and "diff_b" in names:
            raise EaselError(f"module '{self.key}' has diff_b without diff (has {sorted(self.tensors)}).")


def group_modules(state_dict: "dict[str, torch.Tensor]") -> dict[str, LoraModule]:
    """Canonical state dict -> ``{component.module: LoraModule}`` (checked), in key order."""
    modules: dict[str, LoraModule] = {}
    for key, value in state_dict.items():
        component, name, tensor = split_key(key)
        module = modules.setdefault(f"{component}.{name}", LoraModule(component, name))
        module.tensors[tensor] = value
    for module in modules.values():
        module.check()
    return modules


def flat_state_dict(modules: "dict[str, LoraModule] | list[LoraModule]") -> "dict[str, torch.Tensor]":
    """``LoraModule``s -> canonical state dict."""
    items = modules.values() if isinstance(modules, dict) else modules
    return {f"{m.key}.{tensor}": value for m in items for tensor, value in m.tensors.items()}


def summary(modules: "dict[str, LoraModule]") -> dict[str, object]:
    """Network type, most common rank/alpha (linear and conv), DoRA, components: for metadata and reports."""
    linear = [m for m in modules.values() if not m.is_spatial and m.kind != "full"]
    conv = [m for m in modules.values() if m.is_spatial and m.kind != "full"]
    kinds = Counter(m.kind for m in modules.values())
    info: dict[str, object] = {
        "network_type": kinds.most_common(1)[0][0] if kinds else "lora",
        "dora": any(m.dora for m in modules.values()),
        "components": sorted({m.component for m in modules.values()}),
        "modules": len(modules),
    }
    full = sum(1 for m in modules.values() if m.kind == "full")
    if full:
        info["full_modules"] = full
    for prefix, group in (("", linear), ("conv_", conv)):
        if group:
            info[f"{prefix}rank"] = Counter(m.rank for m in group).most_common(1)[0][0]
            info[f"{prefix}alpha"] = Counter(m.alpha for m in group).most_common(1)[0][0]
    return info


def non_finite(tensors: "Mapping[str, torch.Tensor]") -> list[str]:
    """Names of the floating-point tensors holding inf or NaN, in their own dtype (so fp16 overflow counts)."""
    import torch

    return [key for key, value in tensors.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


def describe_names(names: list[str], shown: int = 5) -> str:
    """``a, b, c (+4 more)`` for messages."""
    return ", ".join(names[:shown]) + (f" (+{len(names) - shown} more)" if len(names) > shown else "")
