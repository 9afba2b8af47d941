"""Low-precision working copies of the float32 adapter weights for the forward and backward pass.

Under mixed precision autocast casts every float32 LoRA weight to bf16/fp16 in every layer, in the forward
pass, again in the checkpointed recomputation, and casts each weight's gradient back: about six small
kernels per adapted layer, thousands per step (``docs/PERFORMANCE.md``, "Where the time goes"). Here the
float32 weights (the masters: what the optimizer, the EMA, clipping and saving see) live in one flat buffer,
and for the forward/backward window each parameter points at its slice of one flat bf16/fp16 buffer,
refreshed by a single copy. The gradients arrive in the working dtype and are gathered by one ``cat`` and
one copy into a flat float32 buffer (added to it under gradient accumulation).

The arithmetic is the one autocast does: the weight is rounded to the compute dtype before its matmul and
its gradient comes out of a compute-dtype matmul, so for LoRA/LoCon the training is bit for bit the same
(``tests/train/test_working.py``). Accumulated gradients are summed in float32, as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

    from toolkit.config.train import LoraTrainerConfig


class WorkingCopies:
    """Swap ``params`` (float32, one device) to ``dtype`` copies inside ``active()``."""

    def __init__(self, params: list[nn.Parameter], dtype: torch.dtype):
        self.params = list(params)
        self.dtype = dtype
        self._build()

    def _build(self) -> None:
        """Move the masters into one flat buffer (the parameters become views of it) and size the others."""
        params = self.params
        device = params[0].device
        total = sum(p.numel() for p in params)
        self.master = torch.empty(total, dtype=torch.float32, device=device)
        self.working = torch.empty(total, dtype=self.dtype, device=device)
        self.grads = torch.zeros(total, dtype=torch.float32, device=device)
        self._masters: list[torch.Tensor] = []
        self._workings: list[torch.Tensor] = []
        self._grad_views: list[torch.Tensor] = []
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                master = self.master[offset:offset + n].view(p.shape)
                master.copy_(p.detach())
                grad = p.grad
                p.data = master
                p.grad = None
                self._masters.append(master)
                self._workings.append(self.working[offset:offset + n].view(p.shape))
                self._grad_views.append(self.grads[offset:offset + n].view(p.shape))
                if grad is not None:  # keep a gradient that was there (views from now on)
                    self._grad_views[-1].copy_(grad)
                    p.grad = self._grad_views[-1]
                offset += n
        self._pointers = [p.data_ptr() for p in params]

    @staticmethod
    def supported(params: list[nn.Parameter]) -> bool:
        """Float32 parameters on one device (what the trainer builds)."""
        return bool(params) and all(p.dtype == torch.float32 for p in params) and len({p.device for p in params}) == 1

    def _intact(self) -> bool:
        """False when something replaced a parameter's tensor (``.to(device)``, ``load_state_dict(assign=True)``)."""
        return all(p.data_ptr() == pointer and p.dtype == torch.float32 for p, pointer in zip(self.params, self._pointers))

    @contextmanager
    def active(self) -> Iterator[None]:
        """Forward and backward inside the block run on the working copies; after it the float32 parameters
        hold the block's gradient, added to what they held before (gradient accumulation)."""
        if not self._intact():
            self._build()
        params = self.params
        self._adopt_gradients()
        before = [p.grad for p in params]
        self.working.copy_(self.master)
        for p, working in zip(params, self._workings):
            p.grad = None
            p.data = working
        completed = False
        try:
            yield
            completed = True
        finally:
            produced = [p.grad for p in params]
            for p, master, grad in zip(params, self._masters, before):
                p.data = master
                p.grad = grad
            if completed:
                self._gather(produced, before)

    def _adopt_gradients(self) -> None:
        """Gradients set outside the block (not views of the flat buffer) are copied into it first."""
        for p, view in zip(self.params, self._grad_views):
            if p.grad is not None and p.grad.data_ptr() != view.data_ptr():
                with torch.no_grad():
                    view.copy_(p.grad)
                p.grad = view

    def _gather(self, produced: list[torch.Tensor | None], before: list[torch.Tensor | None]) -> None:
        """One ``cat`` of the working-dtype gradients into the float32 buffer (``add_`` when accumulating)."""
        if all(grad is None for grad in produced):
            return
        flat = [grad.reshape(-1) if grad is not None else view.new_zeros(view.numel(), dtype=self.dtype)
                for grad, view in zip(produced, self._grad_views)]
        with torch.no_grad():
            joined = torch.cat(flat)  # in the gradients' own dtype: batched kernels (a dtype change copies one by one)
            if all(grad is None for grad in before):
                self.grads.copy_(joined)
            else:
                # a parameter without a gradient so far holds stale numbers in the buffer: zero them first
                for grad, view in zip(before, self._grad_views):
                    if grad is None:
                        view.zero_()
                self.grads.add_(joined)
        for p, grad, view in zip(self.params, produced, self._grad_views):
            if grad is not None and p.grad is None:
                p.grad = view


    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` of the masters' gradients, bit for bit, in a handful of operators: the
        same per-tensor norms (one multi-tensor call) and total, without torch's move of each norm to one device,
        and the scaling as one multiply of the flat buffer every gradient is a view of. Returns the total norm."""
        grads = [p.grad for p in self.params if p.grad is not None]
        views = all(p.grad is None or p.grad.data_ptr() == view.data_ptr() for p, view in zip(self.params, self._grad_views))
        if not grads or not views:  # a gradient set outside ``active()``: torch's own way
            return torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        with torch.no_grad():
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
            # regions of parameters without a gradient hold zeros or numbers no one reads: scaling them is harmless
            self.grads.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total


def working_copies_for(config: "LoraTrainerConfig", accelerator: "Accelerator", params: list[nn.Parameter]) -> "WorkingCopies | None":
    """bf16/fp16 working copies of the trained ``params`` when ``train.working_copies`` asks or its default holds.

    Only under autocast (accelerate's native mixed precision): without it there is nothing to save. Not with
    several processes: DDP reduces the gradients in the parameters' own float32 buckets. By default only for
    lora/locon, whose results are bit for bit those of autocast; DoRA, LoHa and LoKr compute their weight
    from several tensors, which in bf16 rounds differently, so they take it only when asked.
    """
    from toolkit.devices import resolve_dtype
    from toolkit.log import log

    wanted = config.train.working_copies
    if wanted is False or not accelerator.native_amp:
        return None
    if accelerator.num_processes > 1:
        if wanted:
            log.info("train.working_copies is off with several processes (DDP reduces float32 gradients).")
        return None
    if wanted is None and config.network.type not in ("lora", "locon"):
        return None
    trained = [p for p in params if p.requires_grad]
    if not WorkingCopies.supported(trained):
        return None
    return WorkingCopies(trained, resolve_dtype(config.train.dtype))
