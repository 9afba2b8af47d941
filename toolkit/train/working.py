"""Low-precision working copies of the float32 adapter weights for the forward and backward pass.

Under mixed precision autocast casts every float32 LoRA weight to bf16/fp16 in every layer, in the forward
pass, again in the checkpointed recomputation, and casts each weight's gradient back: about six small
kernels per adapted layer, thousands per step (``docs/PERFORMANCE.md``, "Where the time goes"). Here the
float32 weights (the masters: what the optimizer, the EMA, clipping and saving see) live in one flat buffer,
and for the forward/backward window each parameter points at its slice of one flat bf16/fp16 buffer,
refreshed by a single copy. Where the modules holding the parameters are known (``owner``), the modules hold
bf16/fp16 stand-in parameters over those slices for the window instead: a dictionary entry each, where pointing
the float32 parameters' ``.data`` at the slices costs a dispatch each (2,888 per SDXL step). The gradients arrive
in the working dtype and are gathered by one multi-tensor copy into the working buffer and one copy into a flat
float32 buffer (added to it under gradient accumulation).

The arithmetic is the one autocast does: the weight is rounded to the compute dtype before its matmul and
its gradient comes out of a compute-dtype matmul, so for LoRA/LoCon the training is bit for bit the same
(``tests/train/test_working.py``). Accumulated gradients are summed in float32, as before.

Since every master is a slice of one buffer and every gradient a slice of another, the optimizer can step one flat
parameter per group instead of each of the network's tensors (``train.flat_optimizer``): SDXL's rank-16 LoRA has
1,444, and bitsandbytes' 8-bit optimizers spend their host time per tensor. That is the same optimizer where the
update is elementwise (``FLAT_OPTIMIZERS``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from toolkit.train.optimizers import FLAT_OPTIMIZERS

BLOCK = 256
"""With a flat optimizer every tensor starts at a multiple of this in the buffers (zeros between), so bitsandbytes'
8-bit optimizers, which quantize their state in blocks of 256 values, quantize each tensor's blocks alone."""

if TYPE_CHECKING:
    from accelerate import Accelerator

    from toolkit.config.train import LoraTrainerConfig


class WorkingCopies:
    """Swap ``params`` (float32, one device) to ``dtype`` copies inside ``active()``."""

    def __init__(self, params: list[nn.Parameter], dtype: torch.dtype, flat: bool = False, owner: nn.Module | None = None):
        """``flat``: ``optimizer_groups`` gives the optimizer one flat parameter per group (``step`` feeds them).
        ``owner``: a module holding every one of ``params`` (in its submodules), whose modules then hold stand-ins
        inside ``active()``. The forward pass should read each parameter through its module (``module.weight``); one read
        through a reference kept elsewhere gets its gradient directly, which the first step notices, takes in, and from
        then on swaps ``.data`` instead."""
        self.params = list(params)
        self._slots = _slots(self.params, owner) if owner is not None else None
        """For each parameter the (module parameter dictionary, name) pairs holding it; None: swap ``.data``."""
        self.dtype = dtype
        self.flat = flat
        self._flat: list[tuple[nn.Parameter, int, int]] = []
        """The optimizer's flat parameters, each with its slice [start, end) of the buffers."""
        self._never_graded = set(range(len(self.params)))
        """Indices of the parameters that have not had a gradient yet (after the first step: the few left out)."""
        self._warned = False
        self._build()

    def _build(self) -> None:
        """Move the masters into one flat buffer (the parameters become views of it) and size the others."""
        params = self.params
        device = params[0].device
        pads = [(-p.numel()) % BLOCK if self.flat else 0 for p in params]
        total = sum(p.numel() for p in params) + sum(pads)
        self.master = torch.zeros(total, dtype=torch.float32, device=device)  # padding stays zero
        self.working = torch.empty(total, dtype=self.dtype, device=device)
        self.grads = torch.zeros(total, dtype=torch.float32, device=device)
        self._masters: list[torch.Tensor] = []
        self._workings: list[torch.Tensor] = []
        self._grad_views: list[torch.Tensor] = []
        self._offsets: list[int] = []
        gaps: list[torch.Tensor] = []
        offset = 0
        with torch.no_grad():
            for p, pad in zip(params, pads):
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
                self._offsets.append(offset)
                if pad:
                    gaps.append(torch.arange(offset + n, offset + n + pad))
                offset += n + pad
        self._padding = torch.cat(gaps).to(device) if gaps else None
        """Where the padding lies: a flat step's 8-bit optimizers can move it off zero, and ``_flat_step`` puts it back."""
        self._pointers = [p.data_ptr() for p in params]
        self._stand_ins = [nn.Parameter(working) for working in self._workings] if self._slots is not None else []
        for flat, start, end in self._flat:  # taken in again: the optimizer keeps its parameter objects
            flat.data = self.master[start:end]

    @staticmethod
    def supported(params: list[nn.Parameter]) -> bool:
        """Float32 parameters on one device (what the trainer builds)."""
        return bool(params) and all(p.dtype == torch.float32 for p in params) and len({p.device for p in params}) == 1

    def _intact(self) -> bool:
        """False when something replaced a parameter's tensor (``.to(device)``, ``load_state_dict(assign=True)``)."""
        return list(map(torch.Tensor.data_ptr, self.params)) == self._pointers  # a new dtype is a new tensor too

    @contextmanager
    def active(self) -> Iterator[None]:
        """Forward and backward inside the block run on the working copies; after it the float32 parameters
        hold the block's gradient, added to what they held before (gradient accumulation)."""
        if not self._intact():
            self._build()
        before = self._adopt_gradients()
        self.working.copy_(self.master)
        if self._slots is None:
            self._swap_data(working=True)
        else:
            self._place(self._stand_ins)
        completed = False
        try:
            yield
            completed = True
        finally:
            if self._slots is None:
                produced = [p.grad for p in self.params]
                self._swap_data(working=False, grads=before)
            else:
                produced = [w.grad for w in self._stand_ins]
                for stand_in in self._stand_ins:
                    stand_in.grad = None
                self._place(self.params)
            if completed:
                direct = self._read_past_stand_ins(before)
                self._gather(produced, before)
                if direct:
                    self._adopt_gradients()  # their gradients into the buffer, beside the gathered ones

    def _swap_data(self, working: bool, grads: list[torch.Tensor | None] | None = None) -> None:
        """Point every parameter at its working slice (without a gradient) or back at its master (with ``grads``)."""
        for i, p in enumerate(self.params):
            p.data = self._workings[i] if working else self._masters[i]
            p.grad = None if grads is None else grads[i]

    def _place(self, tensors: list[nn.Parameter]) -> None:
        """Put ``tensors[i]`` where the modules hold parameter ``i``."""
        for i, slots in enumerate(self._slots or []):
            for parameters, name in slots:
                parameters[name] = tensors[i]

    def _read_past_stand_ins(self, before: list[torch.Tensor | None]) -> bool:
        """Whether, with stand-ins, a float32 parameter got a gradient of its own inside the block: something in the
        forward pass kept a reference to it rather than reading it from its module. (Found where it had none before,
        so at the first micro-batch; an accumulated one lands in its buffer slice, where it belongs.)"""
        if self._slots is None or all(p.grad is grad for p, grad in zip(self.params, before)):
            return False
        from toolkit.log import log

        log.warning("warning: a float32 adapter weight was read past its module in the forward pass; the working copies "
                    "swap the weights' .data from now on (slower on the host, the same numbers).")
        self._slots, self._stand_ins = None, []
        return True

    def _adopt_gradients(self) -> list[torch.Tensor | None]:
        """Gradients set outside the block (not views of the flat buffer) are copied into it first. Returns each
        parameter's gradient."""
        grads = [p.grad for p in self.params]
        for i, grad in enumerate(grads):
            view = self._grad_views[i]
            if grad is not None and grad is not view and grad.data_ptr() != view.data_ptr():
                with torch.no_grad():
                    view.copy_(grad)
                self.params[i].grad = grads[i] = view
        return grads

    def _gather(self, produced: list[torch.Tensor | None], before: list[torch.Tensor | None]) -> None:
        """The working-dtype gradients into the float32 buffer (added to it when accumulating), through the working
        buffer, whose weights the backward pass no longer needs: one multi-tensor copy and one dtype copy, where a
        ``cat`` would first reshape each of SDXL's 1,444 gradients (a host dispatch each) into a temporary."""
        present = [i for i, grad in enumerate(produced) if grad is not None]
        if not present:
            return
        with torch.no_grad():
            for i, grad in enumerate(produced):  # the missing ones read zero (their slices hold this step's weights)
                if grad is None:
                    self._workings[i].zero_()
            torch._foreach_copy_([self._workings[i] for i in present], [produced[i] for i in present])
            if all(grad is None for grad in before):
                self.grads.copy_(self.working)  # the padding is zero in both (the masters' is kept zero)
            else:
                # a parameter without a gradient so far holds stale numbers in the buffer: zero them first
                for grad, view in zip(before, self._grad_views):
                    if grad is None:
                        view.zero_()
                self.grads.add_(self.working)
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

    def describe(self) -> str:
        """The line the run's summary gives them."""
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, str(self.dtype))
        flat = f"; the optimizer steps {len(self._flat)} flat tensors (train.flat_optimizer)" if self._flat else ""
        swaps = ", swapped in through .data" if self._slots is None else ""
        return f"adapter weights float32, computed through {name} working copies (train.working_copies{swaps}){flat}"

    def optimizer_groups(self, groups: list[dict]) -> list[dict]:
        """``groups`` (the optimizer's parameter groups, each a run of ``params`` in order) with each group's parameters
        as one flat parameter sharing the masters' memory when ``flat``; as they are otherwise."""
        if not self.flat:
            return groups
        index = {id(p): i for i, p in enumerate(self.params)}
        positions = [[index[id(p)] for p in group["params"]] for group in groups]
        if [i for run in positions for i in run] != list(range(len(self.params))):
            raise ValueError("flat optimizer groups need the working copies' parameters, group after group")
        self._flat = []
        for run in positions:
            start, end = self._offsets[run[0]], self._offsets[run[-1]] + self.params[run[-1]].numel()
            self._flat.append((nn.Parameter(self.master[start:end]), start, end))
        return [{**group, "params": [flat]} for group, (flat, _, _) in zip(groups, self._flat)]

    def step(self, optimizer: torch.optim.Optimizer, max_grad_norm: float = 0.0) -> None:
        """Clip the gradients to ``max_grad_norm`` (when > 0), ``optimizer.step()``, and drop every gradient. Flat:
        each flat parameter takes its slice of the gradient buffer; a parameter without a gradient this step keeps
        its weights, as a per-tensor step skips it (its region of the buffer reads zero, which leaves an elementwise
        optimizer's zero moments at zero)."""
        if max_grad_norm > 0:
            self.clip_grad_norm_(max_grad_norm)  # the same numbers as torch's, without a call per tensor
        if not self.flat:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return
        self._flat_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad = None

    def _flat_step(self, optimizer: torch.optim.Optimizer) -> None:
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if len(missing) == len(self.params):
            return  # nothing to step, as a per-tensor optimizer does nothing
        if not self._warned and any(i not in self._never_graded for i in missing):
            self._warned = True
            from toolkit.log import log

            log.warning("warning: some adapter weights had a gradient before and none in this step; with "
                        "train.flat_optimizer they keep their weights but their optimizer moments decay. Set "
                        "train.flat_optimizer: false to skip them as a per-tensor optimizer does.")
        self._never_graded.intersection_update(missing)  # per step: as many as are missing, not every parameter
        with torch.no_grad():
            kept = [(self._masters[i], self._masters[i].clone()) for i in missing]
            for i in missing:
                self._grad_views[i].zero_()
            for flat, start, end in self._flat:
                flat.grad = self.grads[start:end]
            optimizer.step()
            for master, value in kept:
                master.copy_(value)
            if self._padding is not None:  # zero again, so the working copies and the gathered gradients are zero there
                self.master.index_fill_(0, self._padding, 0.0)


def _slots(params: list[nn.Parameter], owner: nn.Module) -> list[list[tuple[dict, str]]] | None:
    """Where the modules under ``owner`` hold each of ``params``; None when one of them is held by none."""
    index = {id(p): i for i, p in enumerate(params)}
    found: list[list[tuple[dict, str]]] = [[] for _ in params]
    for module in owner.modules():
        for name, p in module._parameters.items():
            if p is not None and id(p) in index:
                found[index[id(p)]].append((module._parameters, name))
    return found if all(found) else None


def flat_by_default(optimizer: str, device: torch.device) -> bool:
    """``train.flat_optimizer``'s default: on a GPU for every optimizer in ``FLAT_OPTIMIZERS``; on the CPU for torch's
    fused Adam/AdamW only. The others run there as a series of whole-tensor operations, each one pass over memory,
    which over one flat tensor of a full-size LoRA leaves the caches that per-tensor passes stay in
    (``bench/optimizer_step.py``: up to 2.6x slower on this CPU; on a GPU bitsandbytes runs one kernel per tensor)."""
    return optimizer in FLAT_OPTIMIZERS and (device.type != "cpu" or optimizer in ("adamw", "adam"))


def working_copies_for(config: "LoraTrainerConfig", accelerator: "Accelerator", groups: list[dict],
                       owner: nn.Module | None = None) -> "WorkingCopies | None":
    """bf16/fp16 working copies of the trained parameters of the optimizer's ``groups`` when ``train.working_copies``
    asks or its default holds; flat (one optimizer parameter per group) unless ``train.flat_optimizer`` is false, for
    the optimizers in ``FLAT_OPTIMIZERS`` without a loss scaler (fp16's scaler unscales per tensor).

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
        if wanted or config.train.flat_optimizer:
            log.info("train.working_copies (and with it flat_optimizer) is off with several processes (DDP reduces "
                     "float32 gradients).")
        return None
    if wanted is None and config.network.type not in ("lora", "locon"):
        return None
    trained = [p for group in groups for p in group["params"] if p.requires_grad]
    if not WorkingCopies.supported(trained):
        return None
    flat = accelerator.scaler is None and (config.train.flat_optimizer or (
        config.train.flat_optimizer is None and flat_by_default(config.train.optimizer, trained[0].device)))
    return WorkingCopies(trained, resolve_dtype(config.train.dtype), flat=flat, owner=owner)
