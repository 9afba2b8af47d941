"""Layer offloading for training and sampling: some denoiser blocks keep their frozen weights in CPU memory.

``BlockOffloader`` keeps the frozen tensors (weights and buffers, quantized or not) of the chosen blocks in
(pinned) CPU memory. A forward pre-hook on each such block copies them to the device just before it runs
and sends the previously onloaded block home; on CUDA the next block in execution order is copied ahead
on a side stream while the current one computes. Trainable tensors (the adapter's parameters) live on the
device all the time, so gradients and the optimizer never see the CPU.

Why not diffusers' group offloading (``enable_group_offload``): its hooks are built for inference. In
training with activation checkpointing the blocks are run again during the backward pass, in reverse
order and (with checkpoint early stopping) without their post-forward hook, so its prefetch order is
wrong and blocks stay onloaded. Here a block is sent home when another one starts, whichever direction
the pass goes, so at most two offloaded blocks are on the device at any time.

Correctness does not depend on timing: autograd keeps its own references to the device copies a backward
pass needs, so sending a block home only drops the module's reference. The memory saving in training
therefore needs gradient checkpointing (without it, autograd keeps every block's weights until backward).

Tensor subclasses (optimum-quanto, torchao) are copied through their ``__tensor_flatten__`` /
``__tensor_unflatten__`` protocol; other parameter types (bitsandbytes) through their own ``.to``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from toolkit.models.blocks import units

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle


def spread(count: int, fraction: float) -> list[int]:
    """``round(count * fraction)`` indices out of ``count``, spread evenly (resident blocks fall in between)."""
    chosen = min(count, max(0, math.floor(count * fraction + 0.5)))
    return sorted({math.floor((i + 0.5) * count / chosen) for i in range(chosen)}) if chosen else []


def _plain(tensor: torch.Tensor) -> bool:
    return type(tensor) in (torch.Tensor, nn.Parameter)


def _rebuild(tensor: torch.Tensor, make: Any) -> torch.Tensor:
    """Apply ``make`` to the plain tensors inside ``tensor`` (itself, or a subclass' inner tensors)."""
    if _plain(tensor):
        return make(tensor)
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        raise TypeError
    names, context = flatten()
    inner = {name: _rebuild(getattr(tensor, name), make) for name in names}
    return type(tensor).__tensor_unflatten__(inner, context, tensor.size(), tensor.stride())


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """A page-locked copy, strides kept (so copies to the GPU can run asynchronously)."""
    return torch.empty_like(tensor, pin_memory=True).copy_(tensor.detach())


def _as_slot(tensor: torch.Tensor, was_param: bool) -> torch.Tensor:
    if was_param and not isinstance(tensor, nn.Parameter):
        return nn.Parameter(tensor, requires_grad=False)
    return tensor


@dataclass
class _Moved:
    """One frozen tensor of an onloaded block: where it sits, its home (CPU) version and the device copy."""

    module: nn.Module
    name: str
    buffer: bool
    home: torch.Tensor
    copy: torch.Tensor


def _frozen(block: nn.Module) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
    found = []
    for module in block.modules():
        found += [(module, name, False, p) for name, p in module._parameters.items() if p is not None and not p.requires_grad]
        found += [(module, name, True, b) for name, b in module._buffers.items() if b is not None]
    return found


class BlockOffloader:
    """Streams the frozen weights of ``blocks`` to ``device`` around each block's forward (see the module docstring)."""

    def __init__(self, blocks: list[nn.Module], device: torch.device):
        self.blocks = blocks
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.onloaded: dict[int, list[_Moved]] = {}
        self.pending: dict[int, Any] = {}
        self.order: list[int] = []
        self.order_known = False
        self.last: int | None = None
        self.copies = 0
        """Blocks copied to the device so far (for tests and benchmarks)."""
        self.handles: list["RemovableHandle"] = []
        for index, block in enumerate(blocks):
            self._settle(block)
            self.handles.append(block.register_forward_pre_hook(self._hook(index)))

    def _settle(self, block: nn.Module) -> None:
        """Trainable tensors to the device; frozen ones home to the CPU (pinned when copying to CUDA)."""
        for module in block.modules():
            for param in module._parameters.values():
                if param is not None and param.requires_grad and param.device != self.device:
                    param.data = param.data.to(self.device)
        for module, name, is_buffer, tensor in _frozen(block):
            home = tensor if tensor.device.type == "cpu" else self._home_copy(tensor)
            if self.cuda:
                try:
                    home = _rebuild(home, _pinned)
                except (TypeError, RuntimeError, NotImplementedError):
                    pass
            (module._buffers if is_buffer else module._parameters)[name] = _as_slot(home, not is_buffer)

    @staticmethod
    def _home_copy(tensor: torch.Tensor) -> torch.Tensor:
        try:
            return _rebuild(tensor, lambda t: t.detach().to("cpu"))
        except TypeError:
            return tensor.to("cpu")

    def _hook(self, index: int) -> Any:
        @torch.compiler.disable
        def before(_module: nn.Module, _args: tuple) -> None:
            self.before(index)
        return before

    def before(self, index: int) -> None:
        """Block ``index`` is about to run: make its weights available, send the others home, prefetch the next."""
        self._learn_order(index)
        if index in self.pending:
            torch.cuda.current_stream(self.device).wait_event(self.pending.pop(index))
        elif index not in self.onloaded:
            self.onloaded[index] = self._onload(index, None)
        for other in [i for i in self.onloaded if i != index]:
            self.offload(other)
        upcoming = self._next(index)
        if upcoming is not None and upcoming not in self.onloaded and self.stream is not None:
            self._prefetch(upcoming)
        self.last = index

    def _learn_order(self, index: int) -> None:
        if not self.order_known:
            if index in self.order:
                self.order_known = True
            else:
                self.order.append(index)

    def _next(self, index: int) -> int | None:
        """The block expected after ``index``: the next in execution order, or the previous one when the pass runs backwards."""
        if not self.order_known or index not in self.order:
            return None
        position = self.order.index(index)
        last = self.order.index(self.last) if self.last in self.order else None
        step = -1 if last is not None and position == last - 1 else 1
        target = position + step
        return self.order[target] if 0 <= target < len(self.order) else None

    def _prefetch(self, index: int) -> None:
        assert self.stream is not None
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        self.onloaded[index] = self._onload(index, self.stream)
        event = torch.cuda.Event()
        event.record(self.stream)
        self.pending[index] = event

    def _onload(self, index: int, stream: Any) -> list[_Moved]:
        """Copy the block's CPU-resident frozen tensors to the device (allocated on the compute stream, copied on ``stream``)."""
        moved = []
        for module, name, is_buffer, tensor in _frozen(self.blocks[index]):
            if tensor.device == self.device:
                continue
            copy = _as_slot(self._to_device(tensor, stream), not is_buffer)
            (module._buffers if is_buffer else module._parameters)[name] = copy
            moved.append(_Moved(module, name, is_buffer, tensor, copy))
        self.copies += 1
        return moved

    def _to_device(self, tensor: torch.Tensor, stream: Any) -> torch.Tensor:
        def copy(plain: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(plain, device=self.device)  # strides kept where the source is dense
            if stream is None:
                return out.copy_(plain.detach(), non_blocking=self.cuda)
            with torch.cuda.stream(stream):
                return out.copy_(plain.detach(), non_blocking=True)

        try:
            return _rebuild(tensor, copy)
        except TypeError:
            return tensor.to(self.device, non_blocking=self.cuda)

    def offload(self, index: int) -> None:
        """Send block ``index`` home: its modules point at the CPU tensors again."""
        if index in self.pending:
            torch.cuda.current_stream(self.device).wait_event(self.pending.pop(index))
        for item in self.onloaded.pop(index, []):
            slots = item.module._buffers if item.buffer else item.module._parameters
            if slots.get(item.name) is item.copy:
                slots[item.name] = item.home

    def offload_all(self) -> None:
        """Send every block home (e.g. before saving memory for something else)."""
        for index in list(self.onloaded):
            self.offload(index)

    def remove(self) -> None:
        """Stop offloading: every block's tensors go to the device for good."""
        self.offload_all()
        for handle in self.handles:
            handle.remove()
        for block in self.blocks:
            block.to(self.device)


_OFFLOADERS: "weakref.WeakKeyDictionary[nn.Module, BlockOffloader]" = weakref.WeakKeyDictionary()
"""The offloader of each module that has one (a denoiser, a text encoder)."""


def register(module: nn.Module, offloader: BlockOffloader) -> None:
    _OFFLOADERS[module] = offloader


def offloader_of(module: nn.Module) -> "BlockOffloader | None":
    return _OFFLOADERS.get(module)


def own_tensors_to(module: "nn.Module", device: "torch.device | str", prefix: str = "") -> None:
    """Move the parameters and buffers held directly by ``module`` and by the containers above its units."""
    for name, param in module._parameters.items():
        if param is not None:
            param.data = param.data.to(device)
    for name, buffer in module._buffers.items():
        if buffer is not None:
            module._buffers[name] = buffer.to(device)
    for name, child in module.named_children():
        if not isinstance(child, nn.ModuleList) and any(isinstance(m, nn.ModuleList) for m in child.modules()):
            own_tensors_to(child, device)


def move_module(module: nn.Module, device: "torch.device | str") -> None:
    """``module.to(device)``, except that the blocks a ``BlockOffloader`` streams keep their frozen weights at home in
    CPU memory (moving them would undo the offloading)."""
    offloader = _OFFLOADERS.get(module)
    if offloader is None:
        module.to(device)
        return
    offloader.offload_all()
    streamed = {id(block) for block in offloader.blocks}
    for _, unit in units(module):
        if id(unit) not in streamed:
            unit.to(device)
    own_tensors_to(module, device)
