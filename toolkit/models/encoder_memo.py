"""Text encoders' outputs kept by their inputs, so a prompt encoded once is not encoded again.

Training previews repeat the same prompts every ``sample_every`` steps, and people generating images repeat a prompt
with other seeds, sizes or denoiser LoRAs. While nothing changes an encoder, its output for a given input never
changes, so ``EncoderMemo`` keeps each encoder output asked for (in CPU memory) and gives it back when the same input
comes again, whichever pipeline asks. The memo sits on the encoders' ``forward``, so it sees exactly their inputs
(token ids, masks, flags). What does change an encoder (a LoRA on it, in the generate job) is given to each round as
that encoder's *state*, part of every key.

With ``train.unload_text_encoder`` the encoders stay in CPU memory through later preview rounds, where before they
came back to the GPU each time (Z-Image's Qwen3-4B: 8 GB beside the denoiser); a prompt not seen yet brings them in
for its round.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from toolkit.models.base import ModelAdapter


class EncoderMemo:
    """Outputs of ``adapter``'s text encoders by their inputs; ``parked``: the encoders that live in CPU memory
    between rounds (brought to the device only for an input not seen yet); ``limit_bytes``: at most this much kept,
    the least recently used outputs dropped first (None: no limit)."""

    def __init__(self, adapter: "ModelAdapter", parked: list[str], limit_bytes: int | None = None):
        self.adapter = adapter
        self.parked = parked
        self.limit_bytes = limit_bytes
        self.outputs: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        """Key -> (output in CPU memory, its bytes), least recently used first."""
        self.held_bytes = 0
        self.misses = 0
        """Encoder calls that had to run (the first round's, and any new prompt's)."""
        self.hits = 0
        """Encoder calls answered from the memo."""
        self._brought = False

    @contextmanager
    def round(self, states: Mapping[str, Hashable | None] | None = None) -> Iterator[None]:
        """One round (a preview round, a group of generated images): every encoder call goes through the memo;
        parked encoders brought in go back after. ``states``: by encoder name, what its output depends on besides
        its inputs (the LoRAs on it); an encoder whose state is None is neither looked up nor kept this round."""
        states = states or {}
        with ExitStack() as stack:
            for name, encoder in self.adapter.text_encoders.items():
                state = states.get(name, ())
                stack.enter_context(_forward_replaced(encoder, lambda forward, name=name, state=state: self._wrap(name, state, forward)))
            try:
                yield
            finally:
                if self._brought:
                    self.adapter.move(self.parked, "cpu")
                    self._brought = False

    def _wrap(self, name: str, state: Hashable | None, forward: Callable[..., Any]) -> Callable[..., Any]:
        def remembered(*args: Any, **kwargs: Any) -> Any:
            key = _key((name, state, args, kwargs)) if state is not None else None
            if key is not None and key in self.outputs:
                self.hits += 1
                self.outputs.move_to_end(key)
                return _moved(self.outputs[key][0], _device_of(args, kwargs))
            self.misses += 1
            if self.parked and not self._brought:
                self.adapter.move(self.parked, self.adapter.device)
                self._brought = True
            output = forward(*args, **kwargs)
            if key is not None:
                self._keep(key, _moved(output, torch.device("cpu")))
            return output

        return remembered

    def _keep(self, key: Hashable, output: Any) -> None:
        """Keep ``output``, dropping the least recently used ones beyond the limit (one larger than it is not kept)."""
        size = _bytes(output)
        if self.limit_bytes is not None and size > self.limit_bytes:
            return
        self.outputs[key] = (output, size)
        self.held_bytes += size
        self._trim()

    def set_limit(self, limit_bytes: int | None) -> None:
        """A new limit (a later generate job's), applied to what is kept now."""
        self.limit_bytes = limit_bytes
        self._trim()

    def _trim(self) -> None:
        while self.limit_bytes is not None and self.held_bytes > self.limit_bytes:
            _, (_, dropped) = self.outputs.popitem(last=False)
            self.held_bytes -= dropped


@contextmanager
def _forward_replaced(module: torch.nn.Module, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """``module.forward`` replaced by ``wrap(forward)`` inside the block (an instance attribute over the method);
    a forward some library set on the instance before (accelerate's hooks do) is put back after."""
    own = module.__dict__.get("forward")
    module.forward = wrap(module.forward)  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is not None:
            module.forward = own  # type: ignore[method-assign]
        else:
            del module.forward


def _key(value: Any) -> Hashable | None:
    """A hashable stand-in for an encoder call's arguments, tensors by their contents; None when something in them
    has no such stand-in (then the call is not remembered)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), value.detach().cpu().numpy().tobytes())
    if value is None or isinstance(value, (bool, int, float, str, torch.device, torch.dtype)):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        parts = [_key(item) for item in value]
        return None if any(part is None for part in parts) else (type(value).__name__, tuple(parts))
    if isinstance(value, dict):
        items = [(str(k), _key(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
        return None if any(part is None for _, part in items) else ("dict", tuple(items))
    return None


def _bytes(value: Any) -> int:
    """The bytes of the tensors in a kept output (as ``_moved`` builds it)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_bytes(item) for item in value)
    return 0


def _device_of(args: Any, kwargs: Any) -> torch.device:
    """Where the call's input tensors are: where the caller wants the output."""
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def _moved(value: Any, device: torch.device) -> Any:
    """``value`` (a model output, tuple, list, dict or tensor) with copies of its tensors on ``device``.
    Other objects become None: an encoder's key-value cache (transformers returns one by default) is nothing a
    pipeline reads, and kept it would hold device memory."""
    if isinstance(value, torch.Tensor):
        return value.to(device, copy=True)  # never the kept tensor itself, whatever the caller does with it
    if isinstance(value, dict):  # transformers' ModelOutput is a dict with fields
        items = {key: _moved(item, device) for key, item in value.items()}
        return type(value)(**items) if hasattr(value, "to_tuple") else type(value)(items)
    if isinstance(value, (list, tuple)):
        moved = [_moved(item, device) for item in value]
        return type(value)(*moved) if hasattr(value, "_fields") else type(value)(moved)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None
