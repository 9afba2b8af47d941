"""One entry point for base-model quantization: ``quantize_module``.

Only ``nn.Linear`` layers are quantized (convolutions, norms and embeddings stay as they are), and only
their weights: activations are computed in the model's dtype, so adapter layers (LoRA, LoKr, ...)
wrapped around a quantized layer train in full precision on top of it. The quantization types:

- ``qfloat8`` / ``qint8`` / ``qint4``: optimum-quanto ``QLinear`` (float8 e4m3 / int8 / int4 weights,
  int4 in groups of 128), dequantized inside the matmul;
- ``float8`` / ``int8``: torchao's ``Float8WeightOnlyConfig`` (per-row e4m3) / ``Int8WeightOnlyConfig``.
  Weight-only, because a LoRA needs the gradient of the base layer's input, which torchao's
  dynamic-activation configs are not built for (and its float8 matmuls need an sm_89+ GPU);
- ``nf4`` / ``fp4`` / ``bnb_int8``: bitsandbytes ``Linear4bit`` (QLoRA's 4-bit NormalFloat or FP4, in
  blocks of 64) / ``Linear8bitLt`` (LLM.int8() with outlier threshold 6);
- ``float8_mm``: easel's ``toolkit.float8.Float8Linear``: float8 e4m3 weights whose matmuls (forward, and the
  input gradient backward) run in float8 too, the speed option for an sm_89+ GPU (see that module).

Every one of them runs on CUDA and, with the versions in requirements.txt, on the CPU too; a device a
backend cannot serve (e.g. Apple ``mps`` for torchao or bitsandbytes) is an EaselError naming the option.

Exclusion patterns name modules kept in full precision: a pattern matches a module whose dotted path
contains it as whole components (``t_embedder`` keeps ``t_embedder.mlp.0``; ``adaLN_modulation`` keeps
``layers.3.adaLN_modulation.0``), or, if it holds ``*``/``?``/``[``, whose path matches it as a glob.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from toolkit.errors import EaselError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class QuantSpec:
    """What a quantization type is made with and where it runs."""

    backend: str
    """Library: optimum-quanto, torchao or bitsandbytes (its pip name)."""
    module: str
    """Module imported to use it."""
    devices: tuple[str, ...]
    """torch device types it runs on."""
    bits: int
    description: str


QTYPES: dict[str, QuantSpec] = {
    "qfloat8": QuantSpec("optimum-quanto", "optimum.quanto", ("cuda", "cpu", "mps", "xpu"), 8, "float8 e4m3 weights (quanto)"),
    "qint8": QuantSpec("optimum-quanto", "optimum.quanto", ("cuda", "cpu", "mps", "xpu"), 8, "int8 weights (quanto)"),
    "qint4": QuantSpec("optimum-quanto", "optimum.quanto", ("cuda", "cpu", "mps", "xpu"), 4, "int4 weights, groups of 128 (quanto)"),
    "float8": QuantSpec("torchao", "torchao", ("cuda", "cpu", "xpu"), 8, "float8 e4m3 per-row weights (torchao, weight-only)"),
    "int8": QuantSpec("torchao", "torchao", ("cuda", "cpu", "xpu"), 8, "int8 per-row weights (torchao, weight-only)"),
    "nf4": QuantSpec("bitsandbytes", "bitsandbytes", ("cuda", "cpu", "xpu"), 4, "4-bit NormalFloat (bitsandbytes)"),
    "fp4": QuantSpec("bitsandbytes", "bitsandbytes", ("cuda", "cpu", "xpu"), 4, "4-bit float (bitsandbytes)"),
    "bnb_int8": QuantSpec("bitsandbytes", "bitsandbytes", ("cuda", "cpu", "xpu"), 8, "LLM.int8() (bitsandbytes)"),
    "float8_mm": QuantSpec("torch", "torch", ("cuda", "cpu"), 8, "float8 e4m3 weights and float8 matmuls (torch._scaled_mm)"),
}


@dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize_module`` did."""

    qtype: str
    quantized: int
    """Linear layers quantized."""
    kept: int
    """Linear layers kept in full precision by the exclusion patterns."""
    bytes_before: int
    bytes_after: int

    def line(self, what: str) -> str:
        """One log line."""
        return (f"{what}: {self.quantized} linear layers quantized to {self.qtype} ({self.kept} kept in full precision), "
                f"{size_text(self.bytes_before)} -> {size_text(self.bytes_after)}")


def size_text(count: int) -> str:
    """Bytes for people: '812 KiB', '5.96 GiB'."""
    value, units = float(count), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.3g} {units[0]}" if units[0] != "B" else f"{count} B"


def check_quantization(qtype: str, device: "torch.device | str", option: str = "model.qtype") -> QuantSpec:
    """The spec of ``qtype``, after checking that its library is installed and serves ``device``.

    Raises:
        EaselError: unknown type, library missing, or a device the library cannot quantize for.
    """
    import importlib

    import torch

    spec = QTYPES.get(qtype)
    if spec is None:
        raise EaselError(f"{option}: unknown quantization type '{qtype}'. Valid: {', '.join(QTYPES)}.")
    device_type = device.type if not isinstance(device, str) else device.split(":")[0]
    if device_type not in spec.devices:
        others = [name for name, other in QTYPES.items() if device_type in other.devices]
        raise EaselError(f"{option}: {qtype} ({spec.backend}) cannot run on a '{device_type}' device; it runs on "
                         f"{', '.join(spec.devices)}. Choose {' or '.join(others) if others else 'no quantization'} here, "
                         "or turn quantization off.")
    try:
        importlib.import_module(spec.module)
    except ImportError as err:
        raise EaselError(f"{option}: {qtype} needs {spec.backend}: `pip install {spec.backend}` ({err}).") from None
    if qtype == "float8_mm":
        from toolkit.float8 import check_float8_device

        if (problem := check_float8_device(torch.device(device), option)) is not None:
            raise EaselError(problem)
    if qtype in COMPILED_ON_CUDA and device_type == "cuda" and not _cuda_toolkit():
        raise EaselError(f"{option}: {qtype} on CUDA runs optimum-quanto's Marlin kernels, which are compiled on first use "
                         "with the CUDA toolkit (nvcc), and none was found (CUDA_HOME). Install the toolkit, or choose "
                         "qint8 (quanto) or int8 / float8 (torchao), which need no compiler.")
    return spec


COMPILED_ON_CUDA = ("qfloat8", "qint4")
"""quanto types whose CUDA kernels (Marlin fp8 / int4) are built at first use with ``torch.utils.cpp_extension``."""


def _cuda_toolkit() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None


def excluded(path: str, patterns: Iterable[str]) -> bool:
    """Whether the module at ``path`` is kept in full precision by ``patterns`` (see the module docstring)."""
    for pattern in patterns:
        if any(char in pattern for char in "*?["):
            if fnmatch.fnmatchcase(path, pattern):
                return True
        elif f".{pattern}." in f".{path}.":
            return True
    return False


def linear_layers(module: "nn.Module", exclude: Iterable[str] = (), prefix: str = "") -> tuple[list[tuple[str, "nn.Linear"]], int]:
    """Plain ``nn.Linear`` layers under ``module`` to quantize, and how many the patterns keep.

    ``prefix`` is the module's own path in the model the patterns were written for.
    """
    from torch import nn

    patterns = tuple(exclude)
    chosen, kept = [], 0
    for path, layer in module.named_modules():
        if type(layer) is not nn.Linear or not path:
            continue
        if excluded(f"{prefix}.{path}" if prefix else path, patterns):
            kept += 1
        else:
            chosen.append((path, layer))
    return chosen, kept


def tensor_bytes(tensor: "torch.Tensor") -> int:
    """Bytes a tensor holds, counting the inner tensors of quantized tensor subclasses."""
    import torch

    flatten = getattr(tensor, "__tensor_flatten__", None)
    if callable(flatten) and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = flatten()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    size = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)
    absmax = getattr(state, "absmax", None)
    return size + (absmax.numel() * absmax.element_size() if absmax is not None else 0)


def weight_bytes(module: "nn.Module") -> int:
    """Bytes of a module's parameters and buffers (quantized ones at their real size)."""
    return sum(tensor_bytes(t) for t in [*module.parameters(), *module.buffers()])


def is_quantized(tensor: "torch.Tensor") -> bool:
    """Whether a weight is stored quantized (a quanto/torchao tensor subclass or a bitsandbytes parameter)."""
    import torch

    # plain float8 tensors are quantized weights too (float8_mm, scaled-fp8 checkpoints), never trained
    return (type(tensor) not in (torch.Tensor, torch.nn.Parameter) or not tensor.is_floating_point()
            or tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2))


def quantize_module(module: "nn.Module", qtype: str, exclude: Iterable[str] = (), device: "torch.device | str | None" = None,
                    *, option: str = "model.qtype", prefix: str = "") -> QuantizeReport:
    """Quantize the weights of the ``nn.Linear`` layers of ``module`` in place (frozen, no gradients).

    Args:
        module: a denoiser, a text encoder or any part of one (e.g. one transformer block).
        qtype: a key of ``QTYPES``.
        exclude: module-path patterns kept in full precision (see the module docstring).
        device: where each layer is quantized and left; default: where it is.
        option: the config option named in errors.
        prefix: the path of ``module`` inside the model that ``exclude`` refers to.

    Raises:
        EaselError: see ``check_quantization``.
    """
    import torch

    target = torch.device(device) if device is not None else _device_of(module)
    spec = check_quantization(qtype, target, option)
    layers, kept = linear_layers(module, exclude, prefix)
    before = weight_bytes(module)
    if layers:
        try:
            BACKENDS[spec.backend](module, layers, qtype, target)
        except (RuntimeError, NotImplementedError, AssertionError) as err:
            raise EaselError(f"{option}: {spec.backend} could not quantize to {qtype} on '{target}': "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. Choose another type "
                             f"(e.g. qint8) or another device.") from err
    # a type may leave some layers as they are (float8_mm: shapes its matmuls cannot take); they count as kept
    quantized = sum(is_quantized(module.get_submodule(path).weight) for path, _ in layers)
    return QuantizeReport(qtype, quantized, kept + len(layers) - quantized, before, weight_bytes(module))


def _device_of(module: "nn.Module") -> "torch.device":
    import torch

    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _quanto(root: "nn.Module", layers: list[tuple[str, "nn.Linear"]], qtype: str, device: "torch.device") -> None:
    from optimum.quanto import qfloat8, qint4, qint8
    from optimum.quanto.nn import quantize_module as quanto_module

    weights = {"qfloat8": qfloat8, "qint8": qint8, "qint4": qint4}[qtype]
    for path, layer in layers:
        layer.to(device)
        quantized = quanto_module(layer, weights=weights)
        quantized.freeze()
        quantized.requires_grad_(False)
        quantized.register_forward_pre_hook(_contiguous_input)
        root.set_submodule(path, quantized)


def _contiguous_input(_module: "nn.Module", args: tuple) -> tuple | None:
    """quanto's int8 kernel for bf16 on the CPU (``torch._weight_int8pack_mm``) refuses strided inputs (e.g. a
    projection after a transpose); a contiguous input is passed through as it is."""
    if args and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def _torchao(root: "nn.Module", layers: list[tuple[str, "nn.Linear"]], qtype: str, device: "torch.device") -> None:
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    # peft wraps torchao layers for training but cannot merge into them; easel never merges into a quantized base
    warnings.filterwarnings("ignore", message=r".*instantiated without `get_apply_tensor_subclass`")
    config = Float8WeightOnlyConfig(set_inductor_config=False) if qtype == "float8" else Int8WeightOnlyConfig(set_inductor_config=False)
    chosen = {id(layer) for _, layer in layers}
    for _, layer in layers:
        layer.to(device)
    quantize_(root, config, filter_fn=lambda module, _name: id(module) in chosen)
    for _, layer in layers:
        layer.requires_grad_(False)


def _bitsandbytes(root: "nn.Module", layers: list[tuple[str, "nn.Linear"]], qtype: str, device: "torch.device") -> None:
    import bitsandbytes as bnb
    import torch

    for path, layer in layers:
        weight, bias = layer.weight.data.to("cpu"), layer.bias
        if qtype == "bnb_int8":
            new: Any = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=bias is not None,
                                           has_fp16_weights=False, threshold=6.0, device="meta")
            new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=bias is not None, compute_dtype=weight.dtype,
                                    quant_type=qtype, device="meta")
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=qtype)
        if bias is not None:
            new.bias = torch.nn.Parameter(bias.data.to("cpu"), requires_grad=False)
        root.set_submodule(path, new.to(device))


def _float8_mm(root: "nn.Module", layers: list[tuple[str, "nn.Linear"]], qtype: str, device: "torch.device") -> None:
    from toolkit.float8 import convert

    convert(root, layers, device)


BACKENDS: dict[str, Callable[["nn.Module", list[tuple[str, "nn.Linear"]], str, "torch.device"], None]] = {
    "optimum-quanto": _quanto, "torchao": _torchao, "bitsandbytes": _bitsandbytes, "torch": _float8_mm,
}
