"""toolkit.float8: a frozen float8 linear layer whose matmuls run in float8, and the adapters on top of it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.config.blocks import NetworkConfig
from toolkit.errors import EaselError
from toolkit.float8 import Float8Linear, check_float8_device, convertible, to_float8
from toolkit.network.network import Network
from toolkit.quantize import check_quantization, is_quantized, quantize_module

ERROR = 0.08
"""Largest relative error of a float8 layer's output and input gradient against the layer it replaces (measured:
output 3.6-3.7%, e4m3 keeps 3 mantissa bits; input gradient 6.2%, the e5m2 gradient keeps 2)."""


def layer(dtype: torch.dtype = torch.bfloat16, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(64, 48, bias=bias).to(dtype).requires_grad_(False)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_the_cast_fills_the_range_and_its_scale_undoes_it() -> None:
    x = torch.randn(16, 32) * 3
    x8, scale = to_float8(x, torch.float8_e4m3fn)
    assert x8.dtype == torch.float8_e4m3fn and float(x8.float().abs().max()) == 448.0
    assert relative_error(x8.float() * scale, x) < 0.05
    spiky = torch.tensor([[1e-3, 2e-3, 50000.0, -1.0]])  # past e4m3's range: clamped to it, never NaN
    assert torch.isfinite(to_float8(spiky, torch.float8_e4m3fn)[0].float()).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_output_and_input_gradient_match_the_layer_it_replaces(dtype: torch.dtype) -> None:
    plain = layer(dtype)
    fast = Float8Linear(plain)
    x = torch.randn(2, 10, 64, dtype=dtype, requires_grad=True)  # 20 rows: not a multiple of 16
    x_fast = x.detach().clone().requires_grad_(True)
    out, out_fast = plain(x), fast(x_fast)
    assert out_fast.dtype == dtype and out_fast.shape == out.shape
    assert relative_error(out_fast, out) < ERROR
    grad = torch.randn_like(out)
    out.backward(grad)
    out_fast.backward(grad)
    assert x_fast.grad.dtype == dtype and relative_error(x_fast.grad, x.grad) < ERROR
    assert fast.weight.grad is None and not fast.weight.requires_grad


def test_under_autocast_the_output_takes_autocasts_dtype() -> None:
    fast = Float8Linear(layer(torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(torch.randn(4, 64)).dtype == torch.bfloat16


def test_the_backward_pass_keeps_no_input() -> None:
    """A frozen base needs no weight gradient, so autograd keeps only the float8 weight and its scale."""
    fast = Float8Linear(layer())
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fast(torch.randn(32, 64, dtype=torch.bfloat16, requires_grad=True))
    assert sorted(str(t.dtype) for t in saved) == ['torch.float32', 'torch.float8_e4m3fn']
    assert sum(t.numel() * t.element_size() for t in saved) == 64 * 48 + 4


def test_weights_take_one_byte_and_count_as_quantized() -> None:
    plain = layer(bias=False)
    fast = Float8Linear(plain)
    assert fast.weight.element_size() == 1 and is_quantized(fast.weight) and not is_quantized(plain.weight)
    assert relative_error(fast.dequantize(), plain.weight) < 0.05 and fast.dequantize().dtype == torch.bfloat16


def test_shapes_float8_matmuls_cannot_take_stay_as_they_are() -> None:
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 40), nn.Linear(40, 32)).to(torch.bfloat16)
    report = quantize_module(model, "float8_mm")
    assert [type(m) for m in model] == [Float8Linear, nn.Linear, nn.Linear]
    assert (report.quantized, report.kept) == (1, 2)
    assert convertible(nn.Linear(32, 16)) and not convertible(nn.Linear(32, 20))


@pytest.mark.parametrize("kind", ["lora", "dora", "loha"])
def test_adapters_train_on_a_float8_base(kind: str) -> None:
    """peft's LoRA and DoRA (whose magnitude needs the dequantized weight) and LyCORIS (bypass mode) wrap it."""
    base = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)).requires_grad_(False)
    torch.manual_seed(1)
    reference = [m.weight.detach().clone() for m in base if isinstance(m, nn.Linear)]
    quantize_module(base, "float8_mm")
    network = Network.build({"m": base}, {"m": ["0", "2"]}, NetworkConfig(type=kind, linear=4, linear_alpha=4))
    network.float()
    if kind == "dora":  # peft starts DoRA's magnitude at the base weight's row norms
        magnitude = next(p for n, p in network.named_parameters() if "magnitude" in n)
        assert relative_error(magnitude, reference[0].norm(dim=1)) < 0.05
    x, target = torch.randn(16, 32), torch.randn(16, 32)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = nn.functional.mse_loss(base(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.95


def test_a_gpu_without_float8_matmuls_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (8, 0))
    with pytest.raises(EaselError, match=r"model\.qtype: float8_mm needs a GPU with float8 matmuls .*A100.* has 8\.0\. "
                                         r"Choose qint8 or float8"):
        check_quantization("float8_mm", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (9, 0))
    assert check_float8_device(torch.device("cuda"), "model.qtype") is None
    assert check_float8_device(torch.device("cpu"), "model.qtype") is None
