"""toolkit.quantize: every quantization type on the CPU, adapters training on top, and the errors."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from toolkit.config.blocks import ModelConfig, NetworkConfig
from toolkit.errors import EaselError
from toolkit.network.network import Network
from toolkit.quantize import QTYPES, check_quantization, excluded, is_quantized, quantize_module, size_text, weight_bytes

torch.set_num_threads(1)

TOLERANCE = {8: 0.03, 4: 0.08}
"""Largest relative output error per weight width (measured on ``Blocks``: 8-bit 0.1-0.9%, 4-bit 2.3-3.7%)."""


class Blocks(nn.Module):
    """An embedder, two residual MLP blocks and an output layer: enough structure for exclusions."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.embed = nn.Linear(32, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
                                    for _ in range(2))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h))


def model() -> Blocks:
    torch.manual_seed(0)
    return Blocks().eval().requires_grad_(False)


def inputs() -> torch.Tensor:
    return torch.randn(8, 32, generator=torch.Generator().manual_seed(1))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("qtype", list(QTYPES))
def test_quantized_model_stays_close_smaller_and_keeps_exclusions(qtype: str) -> None:
    original = model()
    quantized = copy.deepcopy(original)
    report = quantize_module(quantized, qtype, exclude=["embed", "out"])
    assert (report.quantized, report.kept) == (4, 2)
    assert type(quantized.embed) is nn.Linear and type(quantized.out) is nn.Linear
    assert torch.equal(quantized.embed.weight, original.embed.weight)
    assert all(is_quantized(block[0].weight) and is_quantized(block[2].weight) for block in quantized.blocks)
    with torch.no_grad():
        error = relative_error(quantized(inputs()), original(inputs()))
    assert 0 < error < TOLERANCE[QTYPES[qtype].bits]
    block_bytes = [weight_bytes(block) for block in original.blocks]
    ratio = sum(weight_bytes(block) for block in quantized.blocks) / sum(block_bytes)
    assert ratio < QTYPES[qtype].bits / 32 * 1.3  # fp32 weights -> 8 or 4 bits (+ scales and the float biases)
    assert report.bytes_after < report.bytes_before == weight_bytes(original)


@pytest.mark.parametrize("qtype", list(QTYPES))
def test_lora_trains_on_a_quantized_base(qtype: str) -> None:
    """peft's LoRA wraps every backend's layer: off it gives the quantized base exactly; its gradients flow; it learns."""
    base = model()
    quantize_module(base, qtype, exclude=["embed", "out"])
    with torch.no_grad():
        before = base(inputs())
    network = Network.build({"m": base}, {"m": ["blocks"]}, NetworkConfig(type="lora", linear=4, linear_alpha=4))
    network.float()
    assert len(network.layers) == 4
    with torch.no_grad():
        assert torch.equal(base(inputs()), before)  # B starts at zero
        for param in network.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
        with network.scaled(0.0):
            assert torch.equal(base(inputs()), before)
    target = torch.randn(8, 32, generator=torch.Generator().manual_seed(4))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.mse_loss(base(inputs()).float(), target)
        loss.backward()
        assert all(param.grad is not None and param.grad.abs().sum() > 0 for param in network.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9
    with torch.no_grad(), network.scaled(0.0):
        assert torch.equal(base(inputs()), before)  # the quantized base did not move


@pytest.mark.parametrize("kind", ["loha", "lokr"])
@pytest.mark.parametrize("qtype", ["qint8", "int8", "nf4"])
def test_lycoris_trains_in_bypass_mode_on_a_quantized_base(kind: str, qtype: str) -> None:
    base = model()
    quantize_module(base, qtype, exclude=["embed", "out"])
    network = Network.build({"m": base}, {"m": ["blocks"]}, NetworkConfig(type=kind, linear=4, linear_alpha=4))
    loss = base(inputs()).float().pow(2).mean()
    loss.backward()
    assert any(param.grad is not None and param.grad.abs().sum() > 0 for param in network.parameters())


def test_exclusion_patterns_match_whole_components_or_globs() -> None:
    assert excluded("t_embedder.mlp.0", ["t_embedder"])
    assert excluded("layers.3.adaLN_modulation.0", ["adaLN_modulation"])
    assert not excluded("layers.3.adaLN_modulation_extra.0", ["adaLN_modulation"])
    assert not excluded("context_refiner.0.attention.to_q", ["refiner"])
    assert excluded("context_refiner.0.attention.to_q", ["*refiner*"])
    assert not excluded("layers.1.attention.to_q", [])


def test_unknown_type_and_impossible_device_are_errors_naming_the_option() -> None:
    with pytest.raises(EaselError, match=r"model\.qtype: unknown quantization type 'int3'.*qfloat8"):
        check_quantization("int3", "cpu")
    with pytest.raises(EaselError, match=r"model\.qtype_te: nf4 \(bitsandbytes\) cannot run on a 'mps' device.*qfloat8"):
        check_quantization("nf4", torch.device("mps"), "model.qtype_te")
    assert check_quantization("qfloat8", "mps").backend == "optimum-quanto"


def test_quanto_kernels_that_need_a_compiler_are_refused_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.cpp_extension

    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", None)
    with pytest.raises(EaselError, match=r"model\.qtype: qfloat8 on CUDA runs optimum-quanto's Marlin kernels.*qint8"):
        check_quantization("qfloat8", "cuda")
    assert check_quantization("qint8", "cuda").backend == "optimum-quanto"
    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", "/usr/local/cuda")
    assert check_quantization("qint4", "cuda:0").bits == 4


def test_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_torchao(name: str, *args: Any) -> Any:
        if name == "torchao":
            raise ImportError("No module named 'torchao'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_torchao)
    with pytest.raises(EaselError, match=r"int8 needs torchao: `pip install torchao`"):
        quantize_module(model(), "int8")


def test_a_backend_failure_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import toolkit.quantize

    def broken(*_: Any) -> None:
        raise RuntimeError("no kernel for this device")

    monkeypatch.setitem(toolkit.quantize.BACKENDS, "torchao", broken)
    with pytest.raises(EaselError, match=r"model\.qtype_te: torchao could not quantize to float8 on 'cpu': no kernel for this device"):
        quantize_module(model(), "float8", option="model.qtype_te")


def test_size_text() -> None:
    assert size_text(512) == "512 B"
    assert size_text(3 * 2 ** 20) == "3 MiB"
    assert size_text(int(5.96 * 2 ** 30)) == "5.96 GiB"


CASES = [("zimage", "qint8"), ("sd15", "int8"), ("sdxl", "nf4")]
TINY_TOLERANCE = {8: 0.03, 4: 0.15}
"""Relative error of the tiny models' predictions (measured: qint8 Z-Image 0.5%, int8 SD 1.5 0.3%, nf4 SDXL 10%:
4-bit blocks of 64 weights over layers only 8-64 channels wide) and text embeddings (at most 1.5%)."""


@pytest.mark.parametrize(("arch", "qtype"), CASES)
def test_tiny_models_load_quantized(arch: str, qtype: str, registry: Any) -> None:
    """Through the real loading code: the architecture's exclusions stay in full precision, outputs stay close."""
    from toolkit.models.loading import load_adapter

    plain = load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch), registry, device="cpu")
    quantized = load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch, quantize=True, qtype=qtype,
                                         quantize_te=True, qtype_te="qint8"), registry, device="cpu")
    layers = {name: module for name, module in quantized.denoiser.named_modules() if isinstance(module, nn.Linear)}
    kept = [name for name in layers if excluded(name, quantized.quantize_exclusions)]
    assert kept and all(type(layers[name]) is nn.Linear and not is_quantized(layers[name].weight) for name in kept)
    assert sum(is_quantized(module.weight) for module in layers.values()) >= len(layers) - len(kept)
    assert weight_bytes(quantized.denoiser) < weight_bytes(plain.denoiser)
    assert all(is_quantized(m.weight) for m in quantized.text_encoders["text_encoder"].modules() if isinstance(m, nn.Linear))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, plain.denoiser.config.in_channels, 8, 8, generator=generator)
    with torch.no_grad():
        cond = plain.encode_prompts(["a red square"])
        error = relative_error(quantized.predict(latents, torch.tensor([500.0]), cond), plain.predict(latents, torch.tensor([500.0]), cond))
        text_error = relative_error(quantized.encode_prompts(["a red square"])["prompt_embeds"], cond["prompt_embeds"])
    assert error < TINY_TOLERANCE[QTYPES[qtype].bits] and text_error < TINY_TOLERANCE[8]


def test_requirements_name_the_quantization_libraries() -> None:
    text = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text()
    assert all(name in text for name in ("optimum-quanto", "torchao", "bitsandbytes"))
