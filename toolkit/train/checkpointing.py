"""Gradient checkpointing through a module's own switch, for every block or one block in N."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from toolkit.log import log


def enable_checkpointing(module: torch.nn.Module, name: str, interval: int = 1) -> "IntervalCheckpointing | None":
    """Gradient checkpointing through the module's own switch (diffusers or transformers); for a diffusers model
    only one block in ``interval`` (the function doing that is returned)."""
    switch = getattr(module, "enable_gradient_checkpointing", None)
    if callable(switch):
        if interval == 1:
            switch()
            return None
        if "gradient_checkpointing_func" not in inspect.signature(switch).parameters:
            log.warning(f"warning: {name} checkpoints every block: its enable_gradient_checkpointing takes no "
                        f"checkpointing function, so train.gradient_checkpointing_interval {interval} does not apply.")
            switch()
            return None
        function = IntervalCheckpointing(interval)
        switch(gradient_checkpointing_func=function)
        return function
    elif callable(getattr(module, "activation_checkpointing_enable", None)):
        module.activation_checkpointing_enable({"use_reentrant": False})
    elif callable(getattr(module, "gradient_checkpointing_enable", None)):
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        log.warning(f"warning: {name} has no gradient checkpointing switch; training without it.")
    return None


class IntervalCheckpointing:
    """diffusers' checkpointing function for one block in ``interval``; the others run as usual.

    diffusers calls it with each block it would checkpoint; blocks are numbered in the order first seen, which
    is the model's forward order, so the same blocks are checkpointed in every step.
    """

    def __init__(self, interval: int):
        self.interval = interval
        self.order: dict[torch.nn.Module, int] = {}
        self.always: set[torch.nn.Module] = set()
        """Blocks checkpointed whatever their number: offloaded ones, whose weights must not wait for backward."""

    def always_checkpoint(self, blocks: "list[torch.nn.Module]") -> None:
        """Checkpoint these blocks and everything in them whatever their number."""
        for block in blocks:
            self.always.update(block.modules())

    def checkpointed(self, block: Any) -> bool:
        """Whether ``block`` is checkpointed (anything not a module always is)."""
        if not isinstance(block, torch.nn.Module):
            return True
        index = self.order.setdefault(block, len(self.order))
        return index % self.interval == 0 or block in self.always

    def __call__(self, block: Any, *args: Any) -> Any:
        from torch.utils.checkpoint import checkpoint

        if not self.checkpointed(block):
            return block(*args)
        return checkpoint(block.__call__, *args, use_reentrant=False)
