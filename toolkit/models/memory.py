"""Where a loaded model's weights live: quantization at load, low-VRAM loading, layer offloading, compile.

Loading (``PipelineAdapter.load`` calls these around the architecture's ``after_load``):

1. ``stage``: the pipeline comes from disk into CPU memory; the VAE and every component that is neither
   quantized nor deferred go to the device at once.
2. ``after_load`` (the architecture's; e.g. merging a training adapter into the weights) sees full precision.
3. ``settle``: quantized components (``model.quantize`` / ``quantize_te``) are moved and quantized one
   block at a time, so the device never holds more than one block in full precision. With ``low_vram``
   or ``layer_offloading`` the denoiser is then parked in CPU memory and placed on the device only when
   first used (its first forward), or when the trainer calls ``place_denoiser`` after building the
   adapter network, i.e. after the latent and text caches were filled and the encoders left the device.
   With ``layer_offloading`` the text encoders' layers (``layer_offloading_text_encoder_fraction`` of them) stay
   in CPU memory from the start and are streamed to the device while an encoder runs; after each encoding they are
   all sent home, so the denoiser never shares the device with a whole encoder.

Placing the denoiser under ``layer_offloading`` hands a fraction of its blocks to a
``toolkit.models.offload.BlockOffloader``; the rest goes to the device.

Nothing here knows an architecture: the "blocks" of a module are the items of its top-level
``nn.ModuleList``s (transformer layers, UNet down/up blocks), found by walking the module tree
(``toolkit.models.blocks``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.models.blocks import blocks, layer_blocks, units
from toolkit.quantize import QuantizeReport, check_quantization, quantize_module

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.hooks import RemovableHandle

    from toolkit.models.base import ModelAdapter
    from toolkit.models.offload import BlockOffloader

COMPILE_BACKEND = "inductor"
"""torch.compile backend of ``compile_blocks`` (tests use ``eager`` to skip code generation)."""


@dataclass
class Deferred:
    """A denoiser parked in CPU memory until first use."""

    device: "torch.device"
    offload_fraction: float | None
    hook: "RemovableHandle | None" = None
    offloader: "BlockOffloader | None" = None
    placed: bool = False


_DEFERRED: "weakref.WeakKeyDictionary[nn.Module, Deferred]" = weakref.WeakKeyDictionary()
_SETTLED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
"""Denoisers whose adapter went through ``settle`` (so the memory options of its config were applied)."""


def quantize_by_units(module: "nn.Module", qtype: str, exclude: Iterable[str], device: "torch.device",
                      park: "torch.device | str | None" = None, option: str = "model.qtype") -> QuantizeReport:
    """Quantize ``module`` one unit at a time on ``device``; each unit then stays there, or goes to ``park``."""
    from torch import nn

    from toolkit.models.offload import own_tensors_to

    patterns = tuple(exclude)
    total = QuantizeReport(qtype, 0, 0, 0, 0)
    for path, unit in units(module):
        parent_path, _, child = path.rpartition(".")
        holder = nn.Module()  # lets a unit that is itself a Linear be replaced, and names match the patterns
        holder.add_module(child, unit.to(device))
        report = quantize_module(holder, qtype, patterns, device, option=option, prefix=parent_path)
        quantized = getattr(holder, child)
        if quantized is not unit:
            module.set_submodule(path, quantized)
        if park is not None:
            quantized.to(park)
        total = QuantizeReport(qtype, total.quantized + report.quantized, total.kept + report.kept,
                               total.bytes_before + report.bytes_before, total.bytes_after + report.bytes_after)
    own_tensors_to(module, park if park is not None else device)
    return total


def describe(config: Any) -> str | None:
    """One dry-run line for the memory options of a ``model:`` block, or None when none is set."""
    parts = []
    if config.quantize:
        parts.append(f"denoiser quantized to {config.qtype}")
    if config.quantize_te:
        parts.append(f"text encoders quantized to {config.qtype_te}")
    if config.low_vram:
        parts.append("low_vram (block-by-block loading, denoiser placed on first use)")
    if config.layer_offloading:
        parts.append(f"{config.layer_offloading_fraction:g} of the denoiser blocks streamed from CPU memory")
    if streams_text(config):
        parts.append(f"{config.layer_offloading_text_encoder_fraction:g} of the text encoders' layers streamed while they encode")
    return ", ".join(parts) or None


def check_applied(adapter: "ModelAdapter") -> None:
    """An adapter that does not place its components through this module cannot honour the memory options.

    Raises:
        EaselError: the config sets one of them and ``settle`` never saw this adapter.
    """
    from toolkit.errors import EaselError

    wanted = describe(adapter.config)
    if wanted and adapter.denoiser not in _SETTLED:
        raise EaselError(f"model: {wanted} requested, but architecture '{adapter.arch.spec.name}' loads its model without "
                         "easel's placement (toolkit.models.memory), so these options would be ignored. Turn them off.")


def streams_text(config: Any) -> bool:
    """Whether the text encoders' layers are streamed from CPU memory (``layer_offloading`` with a text fraction)."""
    return bool(config.layer_offloading and config.layer_offloading_text_encoder_fraction > 0)


def defers(config: Any) -> bool:
    """Whether the config parks the denoiser in CPU memory until first use."""
    return bool(config.low_vram or config.layer_offloading)


def stage(adapter: "ModelAdapter") -> None:
    """Check the quantization options, then move what needs no further treatment to the device."""
    config, device = adapter.config, adapter.device
    if config.quantize:
        check_quantization(config.qtype, device, "model.qtype")
    if config.quantize_te:
        check_quantization(config.qtype_te, device, "model.qtype_te")
    names = ["vae"] + ([] if config.quantize_te or streams_text(config) else list(adapter.text_encoders))
    if not (config.quantize or defers(config)):
        names.append("denoiser")
    adapter.move(names, device)


def settle(adapter: "ModelAdapter") -> None:
    """Quantize what the config asks for (block by block) and park or place the denoiser."""
    config, device = adapter.config, adapter.device
    if config.quantize_te:
        for name, encoder in adapter.text_encoders.items():
            report = quantize_by_units(encoder, config.qtype_te, (), device, "cpu" if streams_text(config) else None,
                                       option="model.qtype_te")
            log.info(report.line(name))
    if streams_text(config):
        for name, encoder in adapter.text_encoders.items():
            stream_text_encoder(name, encoder, device, config.layer_offloading_text_encoder_fraction)
    park = "cpu" if defers(config) else None
    if config.quantize:
        report = quantize_by_units(adapter.denoiser, config.qtype, adapter.quantize_exclusions, device, park)
        log.info(report.line(adapter.denoiser_name))
    _SETTLED.add(adapter.denoiser)
    if defers(config):
        fraction = config.layer_offloading_fraction if config.layer_offloading else None
        state = Deferred(device, fraction)
        state.hook = adapter.denoiser.register_forward_pre_hook(lambda *_: place_denoiser(adapter))
        _DEFERRED[adapter.denoiser] = state


def place_denoiser(adapter: "ModelAdapter") -> None:
    """Bring a parked denoiser to the device (part of it, under layer offloading); nothing if it is not parked."""
    state = _DEFERRED.get(adapter.denoiser)
    if state is None or state.placed:
        return
    state.placed = True
    if state.hook is not None:
        state.hook.remove()
    if state.offload_fraction is None:
        adapter.denoiser.to(state.device)
        return
    state.offloader = offload_blocks(adapter.denoiser, state.device, state.offload_fraction)
    log.info(f"layer offloading: {len(state.offloader.blocks)} of {len(blocks(adapter.denoiser))} "
             f"{adapter.denoiser_name} blocks stay in CPU memory and are streamed to {state.device} when used")


def stream_text_encoder(name: str, encoder: "nn.Module", device: "torch.device", fraction: float) -> "BlockOffloader":
    """Keep ``fraction`` of the encoder's layers in CPU memory, streamed to ``device`` while it encodes; after each
    forward every streamed layer goes home (an encoder runs once or twice per batch, then the denoiser needs the room)."""
    found = layer_blocks(encoder)
    offloader = offload_blocks(encoder, device, fraction, [block for _, block in found])
    encoder.register_forward_hook(lambda *_: offloader.offload_all())
    log.info(f"layer offloading: {len(offloader.blocks)} of {len(found)} {name} layers stay in CPU memory and are "
             f"streamed to {device} while it encodes")
    return offloader


def unpark(adapter: "ModelAdapter") -> None:
    """Take a parked denoiser out of this module's placement, left where it is (in CPU memory): its new owner places
    it (``toolkit.train.sharding`` shards it onto the devices). Nothing if it is not parked."""
    state = _DEFERRED.pop(adapter.denoiser, None)
    if state is not None and state.hook is not None:
        state.hook.remove()


def offload_blocks(module: "nn.Module", device: "torch.device", fraction: float,
                   found: "list[nn.Module] | None" = None) -> "BlockOffloader":
    """Offload ``fraction`` of the blocks of ``module`` (``found``, by default its top-level lists' items; spread
    evenly); everything else goes to ``device``."""
    from toolkit.models.offload import BlockOffloader, own_tensors_to, register, spread

    found = [block for _, block in blocks(module)] if found is None else found
    chosen = {id(found[i]) for i in spread(len(found), fraction)}
    for _, unit in units(module):
        if id(unit) not in chosen:
            unit.to(device)
    own_tensors_to(module, device)
    offloader = BlockOffloader([block for block in found if id(block) in chosen], device)
    register(module, offloader)
    return offloader


def offloaded(module: "nn.Module") -> "list[nn.Module]":
    """The blocks of ``module`` whose weights are streamed from CPU memory."""
    from toolkit.models.offload import offloader_of

    offloader = offloader_of(module)
    return list(offloader.blocks) if offloader is not None else []


def check_compile(device: "torch.device") -> None:
    """Fail before loading when ``train.compile`` cannot work: inductor writes its CUDA kernels in Triton, and
    without it the first training step would stop with a compiler traceback (as on Windows without triton-windows)."""
    from torch.utils._triton import has_triton

    if COMPILE_BACKEND == "inductor" and device.type == "cuda" and not has_triton():
        raise EaselError("train.compile: torch.compile needs Triton for CUDA kernels, and it is not installed. "
                         "Install it (`pip install triton`; on Windows `pip install triton-windows`) or set "
                         "train.compile: false (steps are then slower, nothing else changes).")


def compile_blocks(units: "Iterable[nn.Module]", skip: "Iterable[nn.Module]" = (), mode: str = "default",
                   constant_floats: bool = False) -> int:
    """``torch.compile`` each of ``units`` (``ModelAdapter.compile_units``) with dynamic shapes, except those in or
    inside the blocks of ``skip`` (offloaded ones); returns how many.

    Units are compiled one by one (``nn.Module.compile``): identical ones share the compiled code, the first step
    is slow, and bucket sizes do not recompile (``dynamic=True``); ``fullgraph=False`` lets adapters and hooks run
    eagerly where Dynamo cannot trace them. ``mode`` is torch.compile's (``train.compile_mode``; CUDA graphs with
    ``reduce-overhead``). ``constant_floats``: see ``_specialize_floats``.
    """
    skipped = {id(inner) for block in skip for inner in block.modules()}
    chosen = [unit for unit in units if id(unit) not in skipped]
    _allow_recompiles(chosen)
    _specialize_floats(constant_floats)
    for unit in chosen:
        unit.compile(backend=COMPILE_BACKEND, dynamic=True, fullgraph=False, mode=None if mode == "default" else mode)
    return len(chosen)


def uses_cuda_graphs(mode: str, device: "torch.device") -> bool:
    """Whether compiled blocks replay CUDA graphs: then each training step must tell torch where it begins
    (``torch.compiler.cudagraph_mark_step_begin``), so the graphs' outputs of the last step may be overwritten."""
    return device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")


def mark_graph_steps(denoiser: "nn.Module") -> "RemovableHandle":
    """Generation with CUDA graphs: each denoiser call starts a new graph step, so the graphs may overwrite the outputs
    of the call before (the sampler has used them by then)."""
    import torch

    return denoiser.register_forward_pre_hook(lambda *_: torch.compiler.cudagraph_mark_step_begin())


def _specialize_floats(constant: bool) -> None:
    """Whether the blocks' float attributes are compiled into the code as constants (``constant``, the trainer's
    choice) or, Dynamo's default, passed in as float64 CPU tensors made on every call.

    The trainer's floats are constants: norm eps, dropout p, scale factors, the LoRA's alpha / rank. As inputs they cost
    2,520 host dispatches of SDXL's 9,331 per training step outside the compiled code (``bench/gpu_train.py
    --profile``), and they are CPU inputs that CUDA graphs have to partition around. Previews at several
    ``network_multiplier`` values compile once for each value. Generation keeps the default, because there the LoRAs'
    weights change from one request to the next, and as constants each new weight would compile the blocks again."""
    import torch._dynamo.config

    torch._dynamo.config.specialize_float = constant


def _allow_recompiles(units: "list[nn.Module]") -> None:
    """Raise Dynamo's limit of graphs per function to what these units need: parameter shapes are static, so each
    distinct shape of a class (SDXL's resnets come in 13) gets its own graph, times grad mode (training, previews)
    and whether the input needs a gradient (the first block's does not). Past the limit units run uncompiled."""
    import torch._dynamo.config

    shapes: dict[type, set[tuple]] = {}
    for unit in units:
        shapes.setdefault(type(unit), set()).add(tuple(tuple(p.shape) for p in unit.parameters()))
    needed = 4 * max((len(found) for found in shapes.values()), default=0)
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, needed)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, needed * len(shapes))


def devices_of(adapter: "ModelAdapter") -> dict[str, set[str]]:
    """Device types of each component's parameters: {'denoiser': {'cpu'}, 'vae': {'cuda'}, ...}."""
    parts = {"denoiser": adapter.denoiser, "vae": adapter.vae, **adapter.text_encoders}
    return {name: {p.device.type for p in module.parameters()} for name, module in parts.items()}
