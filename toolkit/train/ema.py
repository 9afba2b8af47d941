"""Exponential moving average of the adapter's parameters (diffusers' EMAModel).

The decay warms up as ``min(ema_decay, (1 + n) / (10 + n))`` after n updates (diffusers' and torch_ema's
rule), so early averages do not cling to the random start.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


class EMA:
    """EMA weights of ``params``; ``swapped()`` puts them in place for sampling and saving."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        from diffusers.training_utils import EMAModel

        self.params = list(params)
        self.inner = EMAModel(self.params, decay=decay, foreach=True)  # one kernel per tensor list, not per tensor

    def step(self) -> None:
        """Fold the current parameters into the average (call after each optimizer step)."""
        self.inner.step(self.params)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Inside the block the parameters hold the EMA weights; the trained ones come back after."""
        self.inner.store(self.params)
        self.inner.copy_to(self.params)
        try:
            yield
        finally:
            self.inner.restore(self.params)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
        self.inner.to(device=self.params[0].device)
