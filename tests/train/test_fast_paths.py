"""The speed options keep the result: a float8 base and compiled blocks train the tiny Z-Image as eager bf16 does.

Tolerances, against the eager bf16 run of the same config and seed (8 steps, lr 1e-2, measured 2026-12-03):
- every step's loss within ``LOSS`` (float8_mm 0.12%, compiled 0.03%),
- the trained LoRA's up weights within ``LORA`` relative distance (float8_mm 14.7%, compiled 4.8%: Adam turns the
  small gradient differences of the first steps into full-size updates).
For scale, the same run with another seed differs by 9.8% in its losses and 147% in its LoRA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import run
from tests.train.test_memory_options import config, trained
from toolkit.models import memory

LOSS = 0.01
LORA = 0.3
STEPS = 8


def train(folder: Path, name: str, model: dict, **options: object) -> tuple[dict[str, torch.Tensor], str, list[float]]:
    path = config(folder, name, "zimage:turbo", model=model,
                  train={"gradient_checkpointing": True, "dtype": "bf16", "steps": STEPS, **options})
    assert run.main([str(path)]) == 0
    return trained(folder, name)


@pytest.fixture(scope="module")
def eager(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], str, list[float]]:
    return train(tmp_path_factory.mktemp("eager"), "eager", {})


def assert_close(run_: tuple[dict[str, torch.Tensor], str, list[float]],
                 reference: tuple[dict[str, torch.Tensor], str, list[float]]) -> None:
    lora, _, losses = run_
    expected_lora, _, expected = reference
    assert len(losses) == len(expected) == STEPS
    assert max(abs(a - b) / b for a, b in zip(losses, expected)) < LOSS
    ups = [key for key in expected_lora if "lora_B" in key or "lora_up" in key]
    assert ups and lora.keys() == expected_lora.keys()
    distance = sum(float((lora[k].float() - expected_lora[k].float()).norm() ** 2) for k in ups) ** 0.5
    size = sum(float(expected_lora[k].float().norm() ** 2) for k in ups) ** 0.5
    assert size > 0 and distance / size < LORA


def test_a_float8_base_trains_as_bf16_does(tmp_path: Path, eager: tuple) -> None:
    fast = train(tmp_path, "fp8", {"quantize": True, "qtype": "float8_mm"})
    assert "transformer: 16 linear layers quantized to float8_mm (21 kept in full precision)" in fast[1]
    assert_close(fast, eager)


@pytest.mark.extended
def test_inductor_compiled_blocks_train_as_eager_does(tmp_path: Path, eager: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor's generated code itself (the other compile tests trace with Dynamo only); about 20-30 s of compiling.
    In the mode that records CUDA graphs on a GPU (the CPU compiles it as the default mode: same code, no graphs)."""
    import torch._dynamo

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "inductor")
    torch._dynamo.reset()
    try:
        compiled = train(tmp_path, "compiled", {}, compile=True, compile_mode="reduce-overhead")
    finally:
        torch._dynamo.reset()
    assert "torch.compile: 4 transformer blocks, mode reduce-overhead" in compiled[1]
    assert_close(compiled, eager)
