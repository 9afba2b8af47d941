"""A frozen ``nn.Linear`` stored in float8 whose matmuls run in float8: ``model.qtype: float8_mm``.

The other quantization types dequantize their weights and multiply in the compute dtype. Here the weight is
kept as float8 e4m3 with one float32 scale, and both matmuls a LoRA step needs from a frozen layer run on the
GPU's float8 units (``torch._scaled_mm``; an sm_89+ GPU, or the CPU):

- forward: ``y = x @ W.T``, the input cast to e4m3 with a scale taken from its absolute maximum;
- backward: only the input gradient ``dx = dy @ W``, the output gradient cast to e5m2 (more range, as the
  gradients need). The base weight is frozen, so no weight gradient is computed and no input is saved for one
  (torchao's float8 training computes it, a third of the layer's work, and keeps the input).

The adapter's own layers (LoRA's down/up matmuls) stay in the compute dtype. Scales are per tensor (one number
per weight, one per input or gradient), which is what float8 matmuls on an sm_89 GPU support. Only layers whose
two sides are multiples of 16 are converted (``_scaled_mm``'s rule); the others stay as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
MULTIPLE = 16
"""``torch._scaled_mm`` needs both dimensions of the weight to be multiples of 16."""


def convertible(layer: nn.Linear) -> bool:
    """Whether ``layer`` has the shape float8 matmuls accept."""
    return layer.in_features % MULTIPLE == 0 and layer.out_features % MULTIPLE == 0


def to_float8(tensor: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``tensor`` scaled to fill ``dtype``'s range and cast to it, and the float32 scale that undoes it.

    The scaling runs in the tensor's own dtype (no float32 copy of each activation on the way); its rounding is far
    below float8's, and the scale returned undoes exactly the one applied."""
    largest = torch.finfo(dtype).max
    amax = tensor.detach().abs().amax().float().clamp(min=1e-12)
    scale = (largest / amax).to(tensor.dtype)
    scaled = (tensor * scale).clamp(-largest, largest).to(dtype)
    return scaled, scale.float().reciprocal()


def scaled_matmul(a: torch.Tensor, a_scale: torch.Tensor, b_t: torch.Tensor, b_scale: torch.Tensor,
                  out_dtype: torch.dtype) -> torch.Tensor:
    """``a @ b_t.T`` for float8 ``a`` (rows x k, row-major) and ``b_t`` (n x k, row-major)."""
    return torch._scaled_mm(a, b_t.t(), scale_a=a_scale, scale_b=b_scale, out_dtype=out_dtype)


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    """What ``F.linear`` would return here: autocast's dtype where autocast is on, else the input's."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class _Float8Matmul(torch.autograd.Function):
    """``x @ W.T`` with float8 operands; the backward pass gives the input's gradient only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                out_dtype: torch.dtype) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x8, x_scale = to_float8(rows, E4M3)
        out = scaled_matmul(x8, x_scale, weight, weight_scale, out_dtype)
        ctx.save_for_backward(weight, weight_scale)
        ctx.input_dtype = x.dtype
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        weight, weight_scale = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        rows = grad.reshape(-1, grad.shape[-1])
        g8, g_scale = to_float8(rows, E5M2)
        # dx = dy @ W: the second operand must be W.T laid out row-major, one transposing copy of the float8 weight
        grad_input = scaled_matmul(g8, g_scale, weight.t().contiguous(), weight_scale, ctx.input_dtype)
        return grad_input.reshape(*grad.shape[:-1], weight.shape[1]), None, None, None


class Float8Linear(nn.Linear):
    """A frozen linear layer with a float8 e4m3 weight and float8 matmuls (see the module docstring).

    It stays an ``nn.Linear`` (same features, ``weight``, ``bias``), so adapters find and wrap it as one; the weight
    has dtype float8_e4m3fn, so ``toolkit.quantize.is_quantized`` sees it as quantized (no merging into it).
    """

    def __init__(self, layer: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = layer.in_features, layer.out_features
        weight, scale = to_float8(layer.weight.detach(), E4M3)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        bias = layer.bias
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.compute_dtype = layer.weight.dtype

    @property
    def W_q(self) -> torch.Tensor:  # noqa: N802 - the name peft looks for
        """peft dequantizes a base weight through ``dequantize()`` on a layer that has ``W_q`` (DoRA needs it)."""
        return self.weight

    def dequantize(self) -> torch.Tensor:
        """The weight in the dtype the layer was made from."""
        return (self.weight.float() * self.weight_scale).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _Float8Matmul.apply(x, self.weight, self.weight_scale, _out_dtype(x))
        return out + self.bias.to(out.dtype) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, float8 e4m3"


def check_float8_device(device: torch.device, option: str) -> str | None:
    """Why float8 matmuls cannot run on ``device``, or None: on CUDA they need compute capability 8.9 (Ada, Hopper)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    capability = torch.cuda.get_device_capability(device)
    if capability >= (8, 9):
        return None
    name = torch.cuda.get_device_name(device)
    return (f"{option}: float8_mm needs a GPU with float8 matmuls (compute capability 8.9 or newer: RTX 40xx, L4, L40, "
            f"H100, H200, B200), and this one ({name}) has {capability[0]}.{capability[1]}. Choose qint8 or float8 "
            "(weight-only 8-bit, same memory) here.")


def convert(root: nn.Module, layers: list[tuple[str, nn.Linear]], device: torch.device) -> None:
    """Replace the chosen layers of ``root`` with ``Float8Linear`` on ``device``; layers of other shapes stay."""
    for path, layer in layers:
        if convertible(layer):
            root.set_submodule(path, Float8Linear(layer.to(device)))
