"""Learning-rate schedules by name, with warm-up and parameters."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.errors import EaselError
from toolkit.train.lr import SCHEDULERS, build_scheduler


def lrs(name: str, warmup: int = 0, total: int = 10, **params: object) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(name, optimizer, warmup_steps=warmup, total_steps=total, params=params)
    values = []
    for _ in range(total):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_schedules_by_hand() -> None:
    assert lrs("constant") == [1.0] * 10
    assert lrs("constant", warmup=4)[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])  # warm-up is never dropped
    assert lrs("constant_with_warmup", warmup=2)[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert lrs("linear") == pytest.approx([1 - i / 10 for i in range(10)])
    assert lrs("cosine") == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)])
    assert lrs("polynomial", power=2.0)[5] == pytest.approx((1 - 1e-7) * 0.5 ** 2 + 1e-7)
    restarts = lrs("cosine_with_restarts", num_cycles=2)
    assert restarts[0] == restarts[5] == 1.0 and restarts[4] < 0.1


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_warms_up(name: str) -> None:
    values = lrs(name, warmup=3, total=12)
    assert values[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_bad_names_and_params() -> None:
    with pytest.raises(EaselError, match="num_cycle not known. Valid: num_cycles, power"):
        lrs("cosine", num_cycle=2)
    with pytest.raises(EaselError, match="num_cycles is for cosine_with_restarts, not for lr_scheduler cosine"):
        lrs("cosine", num_cycles=2)
    with pytest.raises(EaselError, match="unknown lr_scheduler"):
        lrs("exponential")
