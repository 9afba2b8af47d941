"""EMA of the adapter parameters."""

from __future__ import annotations

import pytest
import torch

from toolkit.train.ema import EMA


def test_average_follows_the_warmed_up_decay_and_swaps_in_and_out() -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([param], decay=0.9)
    expected = torch.zeros(3)
    for step in range(1, 6):
        with torch.no_grad():
            param.fill_(float(step))
        ema.step()
        decay = 0.0 if step == 1 else min(0.9, step / (9 + step))  # diffusers: (1 + n) / (10 + n), n = step - 1
        expected = decay * expected + (1 - decay) * param.detach()
    with ema.swapped():
        assert torch.allclose(param, expected)
    assert torch.equal(param.detach(), torch.full((3,), 5.0))
    with pytest.raises(RuntimeError):
        with ema.swapped():
            raise RuntimeError("inside")
    assert torch.equal(param.detach(), torch.full((3,), 5.0))


def test_state_round_trip() -> None:
    param = torch.nn.Parameter(torch.ones(2))
    ema = EMA([param], decay=0.5)
    ema.step()
    with torch.no_grad():
        param.mul_(3)
    ema.step()
    other_param = torch.nn.Parameter(torch.zeros(2))
    other = EMA([other_param], decay=0.5)
    other.load_state_dict(ema.state_dict())
    with other.swapped(), ema.swapped():
        assert torch.equal(other_param, param)
