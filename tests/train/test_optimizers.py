"""Each optimizer by name: it trains, takes optimizer_params and per-group lrs, and its state survives a save."""

from __future__ import annotations

import importlib.util
import io

import pytest
import torch

from toolkit.errors import EaselError
from toolkit.train.optimizers import OPTIMIZERS, build_optimizer

NEEDS = {"adamw8bit": "bitsandbytes", "adam8bit": "bitsandbytes", "lion8bit": "bitsandbytes", "lion": "bitsandbytes",
         "prodigy": "prodigyopt", "adafactor": "transformers"}
LR = {"prodigy": 1.0, "sgd": 0.1, "adafactor": 0.05}


def groups() -> tuple[list[dict], torch.nn.Parameter, torch.nn.Parameter]:
    torch.manual_seed(0)
    first = torch.nn.Parameter(torch.randn(64, 64))  # big enough for bitsandbytes' 8-bit state
    second = torch.nn.Parameter(torch.randn(8))
    return [{"params": [first], "lr": 1e-2, "name": "transformer"},
            {"params": [second], "lr": 1e-3, "name": "text_encoder"}], first, second


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_lowers_a_quadratic_and_keeps_group_lrs(name: str) -> None:
    package = NEEDS.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    param_groups, first, second = groups()
    lr = LR.get(name, 1e-2)
    param_groups[0]["lr"] = lr
    second_lr = lr if name == "prodigy" else 1e-3  # prodigy takes one lr for all groups
    param_groups[1]["lr"] = second_lr
    optimizer = build_optimizer(name, param_groups, lr, {})
    assert [g["lr"] for g in optimizer.param_groups] == [lr, second_lr]
    start = (first ** 2).sum().item()
    for _ in range(20):
        optimizer.zero_grad()
        ((first ** 2).sum() + (second ** 2).sum()).backward()
        optimizer.step()
    assert (first ** 2).sum().item() < start * 0.98
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    again = groups()[0]
    again[0]["lr"], again[1]["lr"] = lr, second_lr
    restored = build_optimizer(name, again, lr, {})
    restored.load_state_dict(torch.load(buffer, weights_only=True))


def test_optimizer_params_are_passed_through() -> None:
    param_groups, _, _ = groups()
    optimizer = build_optimizer("adamw", param_groups, 1e-2, {"weight_decay": 0.3, "betas": [0.8, 0.9]})
    assert optimizer.param_groups[0]["weight_decay"] == 0.3 and tuple(optimizer.param_groups[0]["betas"]) == (0.8, 0.9)
    adafactor = build_optimizer("adafactor", groups()[0], 1e-2, {"relative_step": False, "clip_threshold": 2.0})
    assert adafactor.param_groups[0]["clip_threshold"] == 2.0 and adafactor.param_groups[0]["scale_parameter"] is False


def test_unknown_optimizer_params_list_the_valid_ones() -> None:
    with pytest.raises(EaselError, match=r"optimizer_params: momentum not taken by adamw\. Valid: .*weight_decay"):
        build_optimizer("adamw", groups()[0], 1e-2, {"momentum": 0.9})
    with pytest.raises(EaselError, match="prodigy needs one learning rate"):
        build_optimizer("prodigy", groups()[0], 1.0, {})
    with pytest.raises(EaselError, match="unknown optimizer 'adamx'"):
        build_optimizer("adamx", groups()[0], 1e-2, {})
