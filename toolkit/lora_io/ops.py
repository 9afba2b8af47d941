"""Operations on LoRAs themselves: merging several into one (concat or SVD) and rank resizing (SVD).

- ``concat``: the ranks are stacked, so the merged update equals ``sum_i w_i dW_i`` exactly
  (LoRA/LoCon only); the result has alpha = rank (scale 1), each file's alpha/rank and weight folded into B.
- ``svd``: the summed update is factorised again by SVD and truncated; any network type that has a
  plain update (LoRA, LoCon, LoHa, LoKr) can be merged or resized this way, the result is a LoRA.
For LoRA factors the SVD is taken on the small core (QR of B and of A^T), which is exact and cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from toolkit.errors import EaselError
from toolkit.lora_io.keys import LoraModule
from toolkit.lora_io.model import delta_weight

if TYPE_CHECKING:
    import torch

    from toolkit.lora_io.files import LoraFile


@dataclass(frozen=True)
class RankRule:
    """How many singular values to keep: at most ``rank``, those >= max / ``sv_ratio``, enough for ``energy``,
    those above ``threshold``, and (ai-toolkit's quantile) those whose running sum stays under ``quantile`` of the sum."""

    rank: int | None = None
    sv_ratio: float | None = None
    energy: float | None = None
    """Fraction of the update's energy (sum of squared singular values) to keep, 0 < energy <= 1."""
    threshold: float | None = None
    """Keep singular values above this (absolute)."""
    quantile: float | None = None
    """Keep the singular values whose running sum is below this fraction of their sum (at least one)."""

    def choose(self, singular: "torch.Tensor") -> int:
        """The number of singular values (at least 1) this rule keeps."""
        import torch

        count = int((singular > 0).sum().item()) or 1
        if self.sv_ratio is not None:
            count = min(count, int((singular >= singular[0] / self.sv_ratio).sum().item()) or 1)
        if self.energy is not None:
            power = singular.double() ** 2
            share = torch.cumsum(power, 0) / power.sum().clamp_min(1e-30)
            count = min(count, int((share < self.energy - 1e-12).sum().item()) + 1)
        if self.threshold is not None:
            count = min(count, int((singular > self.threshold).sum().item()) or 1)
        if self.quantile is not None:
            running = torch.cumsum(singular.double(), 0)
            count = min(count, int((running < self.quantile * running[-1]).sum().item()) or 1)
        if self.rank is not None:
            count = min(count, self.rank)
        return max(1, count)


@dataclass
class ModuleReport:
    """One module of a merge or resize: ranks before and after, and the share of energy kept."""

    key: str
    rank_before: int
    rank_after: int
    kept_energy: float
    total_energy: float


@dataclass
class Report:
    """Per-module reports and the overall kept energy."""

    modules: list[ModuleReport] = field(default_factory=list)

    @property
    def kept_energy(self) -> float:
        total = sum(m.total_energy for m in self.modules)
        return sum(m.kept_energy * m.total_energy for m in self.modules) / total if total > 0 else 1.0

    def lines(self, limit: int = 12) -> list[str]:
        """A readable summary: overall, the least-kept modules, and rank counts."""
        if not self.modules:
            return ["no modules"]
        worst = sorted(self.modules, key=lambda m: m.kept_energy)[:limit]
        ranks: dict[int, int] = {}
        for module in self.modules:
            ranks[module.rank_after] = ranks.get(module.rank_after, 0) + 1
        lines = [f"{len(self.modules)} modules, kept energy {self.kept_energy:.6f} overall "
                 f"(min {worst[0].kept_energy:.6f}); new ranks: "
                 + ", ".join(f"{rank} x{count}" for rank, count in sorted(ranks.items()))]
        lines += [f"  {m.key}: rank {m.rank_before} -> {m.rank_after}, kept {m.kept_energy:.6f}" for m in worst]
        return lines


def _factors(parts: Sequence[tuple[LoraModule, float]]) -> "tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]":
    """Stacked (up [out, R], down [R, in*k*k], down's shape tail) with each part's weight and alpha/rank in up."""
    import torch

    ups, downs = [], []
    tail = tuple(parts[0][0].tensors["lora_A.weight"].shape[1:])
    for module, weight in parts:
        down, up = module.tensors["lora_A.weight"].float(), module.tensors["lora_B.weight"].float()
        if tuple(down.shape[1:]) != tail:
            raise EaselError(f"module '{module.key}': the LoRAs disagree on its input shape ({tuple(down.shape[1:])} vs {tail}).")
        ups.append(up.flatten(1) * (weight * module.scale))
        downs.append(down.flatten(1))
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0), tail


def _lora(key: str, up: "torch.Tensor", down: "torch.Tensor", tail: tuple[int, ...], source: str = "") -> LoraModule:
    import torch

    rank = down.shape[0]
    component, _, name = key.partition(".")
    tensors = {"lora_A.weight": down.reshape(rank, *tail).contiguous(),
               "lora_B.weight": up.reshape(up.shape[0], rank, *([1] * (len(tail) - 1))).contiguous(),
               "alpha": torch.tensor(float(rank))}
    return LoraModule(component, name, tensors, source)


def _svd_of_factors(up: "torch.Tensor", down: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """SVD of ``up @ down`` from its factors: QR of each side, SVD of the small core."""
    import torch

    q_up, r_up = torch.linalg.qr(up.double())
    q_down, r_down = torch.linalg.qr(down.double().T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
    return q_up @ u, s, vh @ q_down.T


def _truncate(key: str, u: "torch.Tensor", s: "torch.Tensor", vh: "torch.Tensor", tail: tuple[int, ...],
              rule: RankRule, rank_before: int) -> tuple[LoraModule, ModuleReport]:
    count = rule.choose(s)
    root = s[:count].sqrt()
    power = s.double() ** 2
    total = float(power.sum())
    kept = float(power[:count].sum()) / total if total > 0 else 1.0
    module = _lora(key, (u[:, :count] * root).float(), (root[:, None] * vh[:count]).float(), tail)
    return module, ModuleReport(key, rank_before, count, kept, total)


def _dense_svd(delta: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    import torch

    return torch.linalg.svd(delta.flatten(1).double(), full_matrices=False)


def reduce_module(key: str, parts: Sequence[tuple[LoraModule, float]], rule: RankRule,
                  shape: "tuple[int, ...] | None" = None) -> tuple[LoraModule, ModuleReport]:
    """``sum_i w_i dW_i`` of one module's parts as a LoRA of the rank ``rule`` picks; where a part is a full module the
    sum stays one (exact: its bias difference has no low-rank form)."""
    if any(module.kind == "full" for module, _ in parts):
        merged = _full_sum(key, parts, shape)
        rank = merged.rank
        return merged, ModuleReport(key, rank, rank, 1.0, 1.0)
    rank_before = sum(module.rank for module, _ in parts)
    if all(module.kind == "lora" and not module.dora for module, _ in parts):
        up, down, tail = _factors(parts)
        return _truncate(key, *_svd_of_factors(up, down), tail, rule, rank_before)
    delta = sum(weight * delta_weight(module, shape) for module, weight in parts)
    return _truncate(key, *_dense_svd(delta), tuple(delta.shape[1:]), rule, rank_before)


def _full_sum(key: str, parts: Sequence[tuple[LoraModule, float]], shape: "tuple[int, ...] | None") -> LoraModule:
    """``sum_i w_i dW_i`` (and the full parts' bias differences) as one full module."""
    component, _, name = key.partition(".")
    diff = sum(weight * delta_weight(module, shape) for module, weight in parts)
    tensors = {"diff": diff}
    biases = [weight * module.tensors["diff_b"].float() for module, weight in parts if "diff_b" in module.tensors]
    if biases:
        tensors["diff_b"] = sum(biases)
    return LoraModule(component, name, tensors, parts[0][0].source)


def concat_module(key: str, parts: Sequence[tuple[LoraModule, float]]) -> LoraModule:
    """The exact merge of LoRA parts: ranks stacked."""
    for module, _ in parts:
        if module.kind != "lora" or module.dora:
            raise EaselError(f"module '{module.key}' is {'DoRA' if module.dora else module.kind}: concat merges only "
                             "plain LoRA/LoCon; use mode: svd for LoHa/LoKr.")
    up, down, tail = _factors(parts)
    return _lora(key, up, down, tail)


def _grouped(loras: Sequence[tuple["LoraFile", float]]) -> dict[str, list[tuple[LoraModule, float]]]:
    grouped: dict[str, list[tuple[LoraModule, float]]] = {}
    for lora, weight in loras:
        for key, module in lora.modules.items():
            grouped.setdefault(key, []).append((module, weight))
    return grouped


def merge_loras(loras: Sequence[tuple["LoraFile", float]], mode: str, rule: RankRule | None = None,
                shapes: "dict[str, tuple[int, ...]] | None" = None) -> tuple[dict[str, LoraModule], Report]:
    """Several weighted LoRAs -> one (``concat``: exact; ``svd``: truncated by ``rule``)."""
    report = Report()
    merged: dict[str, LoraModule] = {}
    for key, parts in _grouped(loras).items():
        if mode == "concat":
            merged[key] = concat_module(key, parts)
            rank = merged[key].rank
            report.modules.append(ModuleReport(key, rank, rank, 1.0, 1.0))
        elif mode == "svd":
            merged[key], entry = reduce_module(key, parts, rule or RankRule(), (shapes or {}).get(key))
            report.modules.append(entry)
        else:
            raise EaselError(f"unknown LoRA merge mode '{mode}'; use concat or svd.")
    return merged, report


def resize_lora(lora: "LoraFile", rule: RankRule, shapes: "dict[str, tuple[int, ...]] | None" = None) -> tuple[dict[str, LoraModule], Report]:
    """Each module's update re-factorised by SVD to the rank ``rule`` picks (LoHa/LoKr become LoRA; full modules stay)."""
    report = Report()
    resized: dict[str, LoraModule] = {}
    for key, module in lora.modules.items():
        resized[key], entry = reduce_module(key, [(module, 1.0)], rule, (shapes or {}).get(key))
        resized[key].source = module.source
        report.modules.append(entry)
    return resized, report


def extract_module(key: str, delta: "torch.Tensor", rule: RankRule) -> tuple[LoraModule, ModuleReport]:
    """A weight change (``[out, in]`` or ``[out, in, k, k]``) as the LoRA of the rank ``rule`` picks (truncated SVD)."""
    return _truncate(key, *_dense_svd(delta), tuple(delta.shape[1:]), rule, min(delta.shape[0], delta[0].numel()))


def scale_module(module: LoraModule, factor: float, target: str) -> LoraModule:
    """The module with its update multiplied by ``factor``: through its factors (``up_down``) or its alpha (``alpha``).

    LoRA factors are both scaled by sqrt(|factor|) (the sign on the up factor), LoHa's and LoKr's first factor by
    ``factor``; DoRA only through alpha would not scale its update, so it is refused.
    """
    import math

    import torch

    if module.dora:
        raise EaselError(f"module '{module.key}' is DoRA: its update is not linear in its factors, so it cannot be rescaled.")
    tensors = dict(module.tensors)
    if module.kind == "full":  # no factors, no alpha: the difference itself
        return LoraModule(module.component, module.name, {k: v * factor for k, v in tensors.items()}, module.source)
    full_lokr = module.kind == "lokr" and "lokr_w1_a" not in tensors and "lokr_w2_a" not in tensors
    if target == "alpha" and not full_lokr:  # LoKr with two whole factors has scale 1 whatever its alpha
        tensors["alpha"] = torch.tensor(float(module.alpha) * factor)
    elif module.kind == "lora":
        root = math.sqrt(abs(factor))
        tensors["lora_A.weight"] = tensors["lora_A.weight"] * root
        tensors["lora_B.weight"] = tensors["lora_B.weight"] * (root if factor >= 0 else -root)
    else:
        first = {"loha": ("hada_w1_a",), "lokr": ("lokr_w1", "lokr_w1_a")}[module.kind]
        name = next(n for n in first if n in tensors)
        tensors[name] = tensors[name] * factor
    return LoraModule(module.component, module.name, tensors, module.source)
