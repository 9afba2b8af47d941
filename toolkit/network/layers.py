"""The glue between one wrapped layer and a ``Network``: peft (LoRA, DoRA) or LyCORIS (LoHa, LoKr).

Each ``AdapterLayer`` registers only the adapter's own parameters as submodules (never the frozen base
layer), so a ``Network`` holding them can be handed to DDP, an optimizer or an EMA as it is. It speaks
the canonical state-dict suffixes of its kind:

- lora / locon / dora: ``lora_A.weight`` (down), ``lora_B.weight`` (up), ``alpha`` (0-dim), and for DoRA
  ``dora_scale``: the per-output-row magnitude in LyCORIS's shape ((out, 1) for linear, (out, 1, 1, 1)
  for conv), which is peft's ``lora_magnitude_vector`` reshaped;
- loha: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, ``alpha``;
- lokr: ``lokr_w1`` (or ``lokr_w1_a``/``lokr_w1_b``), ``lokr_w2`` (or ``lokr_w2_a``/``lokr_w2_b``), ``alpha``;
- full (``network.full_if_contains``): ``diff`` (the weight's shape) and ``diff_b`` (the bias's, where it has one),
  added to the layer's output as ``multiplier * (diff x + diff_b)``, i.e. the layer acting with ``W + diff``.

The update is ``h = W x + multiplier * scale * delta(x)`` with ``scale = alpha / rank`` (LoKr with both
Kronecker factors full: scale 1, as LyCORIS and ComfyUI define it). DoRA's multiplier interpolates the
layer's output between the base layer and the DoRA layer, ``base + m * (dora - base)``, which is what
ComfyUI does to the weight; with several adapters active on one DoRA layer it scales their sum.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.network.targets import Target, base_layer
from toolkit.quantize import is_quantized

if TYPE_CHECKING:
    from toolkit.config.blocks import NetworkConfig


class AdapterLayer(nn.Module):
    """One layer's adapter of one network."""

    def __init__(self, target: Target):
        super().__init__()
        self.target = target

    def canonical(self) -> dict[str, torch.Tensor]:
        """Suffix -> tensor in the canonical format (views of the live parameters)."""
        raise NotImplementedError

    def load_canonical(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy tensors with the suffixes of ``canonical()`` in (shapes already checked)."""
        raise NotImplementedError

    def set_multiplier(self, value: float) -> None:
        raise NotImplementedError

    def set_enabled(self, enabled: bool) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        """Take the adapter out of the model for good."""
        raise NotImplementedError


def _set_active(layer: Any, names: list[str]) -> None:
    """Set a peft layer's active adapters without touching any parameter's requires_grad."""
    flags = [(p, p.requires_grad) for p in layer.parameters()]
    layer.set_adapter(names)
    for param, flag in flags:
        param.requires_grad_(flag)


class Dropouts:
    """kohya's rank and module dropout on a LoRA's down projection output (training only).

    Rank dropout zeroes each (sample, rank) entry with probability ``rank`` and scales the rest by 1 / (1 - rank);
    module dropout zeroes the whole output, so the layer gives its base output for that forward pass.
    """

    def __init__(self, owner: nn.Module, rank: float, module: float):
        self.owner, self.rank, self.module = owner, rank, module

    def __call__(self, down: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if not self.owner.training:
            return None
        if self.module and float(torch.rand(())) < self.module:
            return out * 0
        if not self.rank:
            return None
        middle = [1] * (out.dim() - 2)
        shape = (out.shape[0], out.shape[1], *middle) if isinstance(down, nn.Conv2d) else (out.shape[0], *middle, out.shape[-1])
        keep = (torch.rand(shape, device=out.device) >= self.rank).to(out.dtype)
        return out * keep / (1.0 - self.rank)


class PeftLayer(AdapterLayer):
    """A LoRA or DoRA adapter named ``name`` inside a peft layer."""

    def __init__(self, target: Target, layer: Any, root: nn.Module, name: str, dora: bool,
                 dropouts: tuple[float, float] = (0.0, 0.0)):
        super().__init__(target)
        self.name = name
        self.lora_A = layer.lora_A[name]
        self.lora_B = layer.lora_B[name]
        self.magnitude = layer.lora_magnitude_vector[name] if dora else None
        self._refs = (layer, root)
        self._multiplier = 1.0
        self._hook = layer.register_forward_hook(self._interpolate) if dora else None
        self._drop = self.lora_A.register_forward_hook(Dropouts(layer, *dropouts)) if any(dropouts) else None

    @property
    def layer(self) -> Any:
        return self._refs[0]

    def canonical(self) -> dict[str, torch.Tensor]:
        alpha = float(self.layer.lora_alpha[self.name])
        out = {"lora_A.weight": self.lora_A.weight, "lora_B.weight": self.lora_B.weight,
               "alpha": torch.tensor(alpha, dtype=self.lora_A.weight.dtype)}
        if self.magnitude is not None:
            weight = base_layer(self.layer).weight
            out["dora_scale"] = self.magnitude.weight.reshape(weight.shape[0], *([1] * (weight.dim() - 1)))
        return out

    @torch.no_grad()
    def load_canonical(self, tensors: dict[str, torch.Tensor]) -> None:
        self.lora_A.weight.copy_(tensors["lora_A.weight"])
        self.lora_B.weight.copy_(tensors["lora_B.weight"])
        if self.magnitude is not None:
            self.magnitude.weight.copy_(tensors["dora_scale"].reshape(self.magnitude.weight.shape))
        self.layer.lora_alpha[self.name] = float(tensors["alpha"])
        self.set_multiplier(self._multiplier)

    def set_multiplier(self, value: float) -> None:
        self._multiplier = float(value)
        scale = self.layer.lora_alpha[self.name] / self.layer.r[self.name]
        self.layer.scaling[self.name] = scale if self.magnitude is not None else scale * self._multiplier

    def _interpolate(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._multiplier == 1.0 or self.name not in module.active_adapters or module.disable_adapters:
            return None
        base = module.base_layer(*args)
        return base + self._multiplier * (output - base)

    def set_enabled(self, enabled: bool) -> None:
        active = [n for n in self.layer.active_adapters if n != self.name]
        _set_active(self.layer, active + [self.name] if enabled else active)

    def remove(self) -> None:
        layer, root = self._refs
        for hook in (self._hook, self._drop):
            if hook is not None:
                hook.remove()
        layer.delete_adapter(self.name)
        if not layer.r:
            root.set_submodule(self.target.path, layer.get_base_layer())


def wrap_peft(root: nn.Module, targets: list[Target], config: "NetworkConfig", name: str) -> list[PeftLayer]:
    """Inject a peft LoRA (or DoRA) adapter called ``name`` into the targets of one component."""
    import re

    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    before = {t.path: list(t.layer.active_adapters) for t in targets if isinstance(t.layer, BaseTunerLayer)}
    flags = [(p, p.requires_grad) for p in root.parameters()]
    exact = "(?:" + "|".join(re.escape(t.path) for t in targets) + ")"
    rank, alpha = targets[0].rank, targets[0].alpha
    # peft matches pattern keys as "(.*\.)?(key)$"; "(?<!.)" pins the key to the start of the name
    rank_pattern = {f"(?<!.){re.escape(t.path)}": t.rank for t in targets if t.rank != rank}
    alpha_pattern = {f"(?<!.){re.escape(t.path)}": t.alpha for t in targets if t.alpha != alpha}
    lora_config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=exact, rank_pattern=rank_pattern,
                             alpha_pattern=alpha_pattern, lora_dropout=float(config.dropout or 0.0),
                             use_dora=config.type == "dora", init_lora_weights=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inject_adapter_in_model(lora_config, root, adapter_name=name)
    for param, flag in flags:
        param.requires_grad_(flag)
    layers = []
    for target in targets:
        layer = root.get_submodule(target.path)
        _set_active(layer, before.get(target.path, []) + [name])
        dropouts = (float(config.rank_dropout or 0.0), float(config.module_dropout or 0.0))
        layers.append(PeftLayer(target, layer, root, name, config.type == "dora", dropouts))
    return layers


class LycorisLayer(AdapterLayer):
    """A LyCORIS LoHa or LoKr module patched onto a layer's forward."""

    def __init__(self, target: Target, config: "NetworkConfig"):
        super().__init__(target)
        from lycoris.modules.loha import LohaModule
        from lycoris.modules.lokr import LokrModule

        dropout = float(config.dropout or 0.0)
        # bypass mode (base(x) + delta(x)) also where the base weight is quantized: it cannot be added to
        options: dict[str, Any] = {"dropout": dropout, "bypass_mode": dropout > 0 or is_quantized(base_layer(target.layer).weight),
                                   "rank_dropout": float(config.rank_dropout or 0.0), "rank_dropout_scale": True,
                                   "module_dropout": float(config.module_dropout or 0.0)}
        if config.type == "lokr":
            options.update(factor=config.lokr_factor, full_matrix=config.lokr_full_rank)
        module_class = LokrModule if config.type == "lokr" else LohaModule
        with contextlib.redirect_stdout(io.StringIO()):  # LyCORIS prints a dropout note; bypass mode applies it
            self.module = module_class(target.key, target.layer, 1.0, target.rank, target.alpha, **options)
        weight = base_layer(target.layer).weight
        self.module.to(device=weight.device, dtype=torch.float32)
        self.module.apply_to()
        self._applied = True
        self._hook = target.layer.register_forward_pre_hook(self._follow_mode)

    def _follow_mode(self, layer: nn.Module, _args: tuple) -> None:
        """Train/eval with the model: the LyCORIS module is not a submodule of it."""
        if self.module.training != layer.training:
            self.module.train(layer.training)

    def canonical(self) -> dict[str, torch.Tensor]:
        # the live tensors under LyCORIS's names (its own state_dict returns computed copies)
        names = self.module.weight_list
        return {name: value for name in names if isinstance(value := getattr(self.module, name, None), torch.Tensor)}

    @torch.no_grad()
    def load_canonical(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in self.canonical().items():
            value.copy_(tensors[key])
        full = getattr(self.module, "use_w1", False) and getattr(self.module, "use_w2", False)
        self.module.scale = 1.0 if full else float(tensors["alpha"]) / self.module.lora_dim

    def set_multiplier(self, value: float) -> None:
        self.module.multiplier = float(value)

    def set_enabled(self, enabled: bool) -> None:
        if enabled and not self._applied:
            self.module.apply_to()
        elif not enabled and self._applied:
            self.module.restore()
        self._applied = enabled

    def remove(self) -> None:
        self.set_enabled(False)
        self._hook.remove()



class FullDiff:
    """A full weight difference on one Linear / Conv2d layer, added by a forward hook: ``h = layer(x) + m * (diff x +
    diff_b)``, which is the layer with weight ``W + m * diff`` (bias ``b + m * diff_b``) without touching ``W``, so it
    works on quantized, offloaded or sharded weights too. Used by training (``FullLayer``) and by LoRA stacks."""

    def __init__(self, layer: nn.Module, diff: torch.Tensor, diff_b: torch.Tensor | None, multiplier: float = 1.0,
                 owner: nn.Module | None = None):
        """``owner``: a module holding ``diff`` / ``diff_b`` as parameters of those names, read from it at each call
        (the trainer's working copies put stand-ins there for the step)."""
        self.layer = base_layer(layer)
        self.diff, self.diff_b = diff, diff_b
        self.owner = owner
        self.multiplier = float(multiplier)
        self.enabled = True
        self._handle: Any = None

    def apply_to(self) -> None:
        if self._handle is None:
            self._handle = self.layer.register_forward_hook(self._add)

    def restore(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """``diff x + diff_b`` in ``x``'s dtype (autograd flows into ``diff``)."""
        diff, diff_b = (self.owner.diff, self.owner.diff_b) if self.owner is not None else (self.diff, self.diff_b)
        weight = diff.to(x.dtype)
        bias = diff_b.to(x.dtype) if diff_b is not None else None
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, bias)  # the layer's own stride, padding (mode), groups
        return F.linear(x, weight, bias)

    def _add(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not self.enabled or self.multiplier == 0.0:
            return None
        return output + self.multiplier * self.update(args[0])


def full_shape(layer: nn.Module) -> tuple[int, ...]:
    """The shape a full difference of ``layer`` has: its weight's (a quantized Linear's packed weight aside)."""
    base = base_layer(layer)
    if isinstance(base, nn.Linear):
        return (base.out_features, base.in_features)
    return tuple(base.weight.shape)


class FullLayer(AdapterLayer):
    """A full weight difference trained in place of a low-rank adapter (ai-toolkit's ``full_if_contains``).

    ``diff`` starts at zero, so the layer starts as the base layer; dropouts do not apply to it."""

    def __init__(self, target: Target):
        super().__init__(target)
        base = base_layer(target.layer)
        device = base.weight.device
        self.diff = nn.Parameter(torch.zeros(full_shape(base), device=device, dtype=torch.float32))
        bias = getattr(base, "bias", None)
        self.diff_b = nn.Parameter(torch.zeros(bias.shape, device=device, dtype=torch.float32)) if bias is not None else None
        self.hook = FullDiff(base, self.diff, self.diff_b, owner=self)
        self.hook.apply_to()

    def canonical(self) -> dict[str, torch.Tensor]:
        out = {"diff": self.diff}
        if self.diff_b is not None:
            out["diff_b"] = self.diff_b
        return out

    @torch.no_grad()
    def load_canonical(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in self.canonical().items():
            value.copy_(tensors[key])

    def set_multiplier(self, value: float) -> None:
        self.hook.multiplier = float(value)

    def set_enabled(self, enabled: bool) -> None:
        self.hook.enabled = enabled

    def remove(self) -> None:
        self.hook.restore()
