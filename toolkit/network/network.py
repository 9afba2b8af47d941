"""``Network``: an adapter (LoRA, LoCon, DoRA, LoHa, LoKr) wrapped around a model's layers.

Which library does what, and why:

- lora / locon / dora go through peft (``inject_adapter_in_model`` with one ``LoraConfig`` per
  component; exact layer paths as a regex, per-layer conv ranks through ``rank_pattern`` /
  ``alpha_pattern``; DoRA is peft's ``use_dora``). peft names adapters, so a second ``Network`` with
  another ``name`` lives in the same layers and both are active: h = Wx + sum_i w_i B_i A_i x.
- layers named by ``full_if_contains`` train a full weight difference instead (``layers.FullLayer``), whatever
  ``type`` says, as ai-toolkit does.
- loha / lokr go through LyCORIS's own modules (``lycoris.modules.LohaModule`` / ``LokrModule``), not
  peft's ports: LyCORIS is the reference implementation whose math and ``.alpha`` convention ComfyUI and
  A1111 reproduce (e.g. LoKr with two full Kronecker factors has scale 1, which peft's LoKr does not
  do), it reads ``lokr_factor`` / ``lokr_full_rank`` as ai-toolkit and kohya users know them, and its
  parameter names are already the LyCORIS file names. Its modules patch the layer's ``forward`` and stack
  with each other and with peft layers, so networks of different kinds coexist too.

The canonical state dict (what ``state_dict()`` returns and ``load_state_dict()`` takes; the LoRA file
formats of other tools are converted from and to it): ``"{component}.{module_path}.{suffix}"`` with the
suffixes listed in ``toolkit.network.layers``, e.g. ``unet.down.0.attn.to_q.lora_A.weight``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from toolkit.errors import EaselError
from toolkit.network.layers import AdapterLayer, FullLayer, LycorisLayer, wrap_peft
from toolkit.network.targets import NetworkLayout, select_targets

if TYPE_CHECKING:
    from toolkit.config.blocks import NetworkConfig


def _slot(key: str) -> str:
    return key.replace(".", "/")


class Network(nn.Module):
    """The adapter layers of one network over the components of a model."""

    def __init__(self, config: "NetworkConfig", name: str, layers: list[AdapterLayer]):
        super().__init__()
        self.config = config
        self.name = name
        self.layers = nn.ModuleDict({_slot(layer.target.key): layer for layer in layers})
        self._multiplier = 1.0
        self._enabled = True
        self._cast_inputs = True

    @classmethod
    def build(cls, components: dict[str, nn.Module], targets: dict[str, list[str]], config: "NetworkConfig",
              *, name: str = "easel", layout: "NetworkLayout | None" = None) -> "Network":
        """Wrap the ``targets`` (target names per component, see ``toolkit.network.targets``) with adapters.

        Raises:
            EaselError: a target name matches nothing, nothing is left to wrap, or an adapter named
                ``name`` is already on one of the layers.
        """
        selected = select_targets(components, targets, config, layout)
        taken = [t.key for t in selected if name in getattr(t.layer, "r", {})]
        if taken:
            raise EaselError(f"an adapter named '{name}' is already on {', '.join(taken[:5])}; give the new one another name.")
        layers: list[AdapterLayer] = [FullLayer(t) for t in selected if t.full]
        for component in dict.fromkeys(t.component for t in selected if not t.full):
            mine = [t for t in selected if t.component == component and not t.full]
            if config.type in ("loha", "lokr"):
                layers += [LycorisLayer(t, config) for t in mine]
            else:
                layers += wrap_peft(components[component], mine, config, name)
        return cls(config, name, layers)

    def _adapter_layers(self) -> list[AdapterLayer]:
        return list(self.layers.values())  # type: ignore[arg-type]

    def cast_inputs(self, enabled: bool) -> bool:
        """Whether peft LoRA layers cast their input to the adapter weights' dtype; returns the previous setting.

        Under mixed precision (autocast) the cast is wasted work: the float32 adapter weights are cast to
        bf16/fp16 for the matmul anyway, so the activations can stay in the compute dtype. Measured on an
        H100 (bench/gpu_train.py --adapter-dtype): the casts cost 12% of a Z-Image step and 27% of an SDXL one.
        Outside autocast (previews) the cast is needed: a bf16 input cannot meet float32 weights.
        """
        previous = self._cast_inputs
        for layer in self._adapter_layers():
            base = getattr(layer, "layer", None)
            if base is not None and hasattr(base, "lora_A"):
                base.cast_input_dtype_enabled = enabled
        self._cast_inputs = enabled
        return previous

    @property
    def components(self) -> list[str]:
        """Names of the components that carry adapter layers, in order."""
        return list(dict.fromkeys(layer.target.component for layer in self._adapter_layers()))

    def parameters_by_component(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters of each component."""
        groups: dict[str, list[nn.Parameter]] = {}
        for layer in self._adapter_layers():
            groups.setdefault(layer.target.component, []).extend(layer.parameters())
        return groups

    def param_groups(self, lrs: dict[str, float], default_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups, one per component, with that component's learning rate."""
        return [{"params": params, "lr": lrs.get(component, default_lr), "name": component}
                for component, params in self.parameters_by_component().items()]

    @property
    def multiplier(self) -> float:
        """Weight of the adapter's update (1 trains and saves; other values for previews and generation)."""
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._multiplier = float(value)
        for layer in self._adapter_layers():
            layer.set_multiplier(self._multiplier)

    @contextmanager
    def scaled(self, multiplier: float) -> Iterator["Network"]:
        """Use another multiplier inside the block."""
        previous = self._multiplier
        self.multiplier = multiplier
        try:
            yield self
        finally:
            self.multiplier = previous

    @property
    def enabled(self) -> bool:
        return self._enabled

    def enable(self) -> None:
        self._set_enabled(True)

    def disable(self) -> None:
        """Take the adapter out of the forward pass (the base model's output), keeping its weights."""
        self._set_enabled(False)

    def _set_enabled(self, enabled: bool) -> None:
        for layer in self._adapter_layers():
            layer.set_enabled(enabled)
        self._enabled = enabled

    def remove(self) -> None:
        """Unwrap every layer; the network cannot be used afterwards."""
        for layer in self._adapter_layers():
            layer.remove()
        self.layers = nn.ModuleDict()

    def state_dict(self, *args: Any, keep_vars: bool = False, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The canonical state dict (see the module docstring), sorted by key."""
        out: dict[str, torch.Tensor] = {}
        for layer in self._adapter_layers():
            for suffix, tensor in layer.canonical().items():
                out[f"{layer.target.key}.{suffix}"] = tensor if keep_vars else tensor.detach()
        return dict(sorted(out.items()))

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        """Load a canonical state dict. Unknown keys, missing keys (when ``strict``) and wrong shapes are errors.

        Raises:
            EaselError: listing the keys that do not fit.
        """
        expected = self.state_dict()
        unknown = sorted(set(state_dict) - set(expected))
        missing = sorted(set(expected) - set(state_dict)) if strict else []
        shapes = [f"{k} (file {tuple(state_dict[k].shape)}, network {tuple(v.shape)})"
                  for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
        if unknown or missing or shapes:
            parts = [f"{len(unknown)} unknown: {_listing(unknown)}" if unknown else "",
                     f"{len(missing)} missing: {_listing(missing)}" if missing else "",
                     f"{len(shapes)} of another shape: {_listing(shapes)}" if shapes else ""]
            raise EaselError(f"the weights do not fit this {self.config.type} network ({'; '.join(p for p in parts if p)}). "
                             f"Keys look like '{next(iter(expected), '')}'. Check network.type, rank (linear/conv) and target_modules.")
        for layer in self._adapter_layers():
            keys = {suffix: f"{layer.target.key}.{suffix}" for suffix in layer.canonical()}
            present = {suffix: state_dict[key] for suffix, key in keys.items() if key in state_dict}
            if present and len(present) < len(keys):
                raise EaselError(f"the weights of {layer.target.key} are incomplete: missing "
                                 f"{', '.join(sorted(set(keys) - set(present)))}.")
            if present:
                layer.load_canonical(present)
        return None

    def summary(self) -> list[str]:
        """Lines for the log: layers and parameters per component."""
        lines = []
        for component, params in self.parameters_by_component().items():
            count = sum(1 for layer in self._adapter_layers() if layer.target.component == component)
            lines.append(f"{component}: {count} layers, {sum(p.numel() for p in params):,} parameters")
        return lines


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
