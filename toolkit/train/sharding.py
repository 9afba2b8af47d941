"""Sharding the frozen denoiser across the processes of a run (``train.distributed: fsdp``), with PyTorch's FSDP2.

Data parallelism alone (DDP) gives every process the whole base model, and a 20B Qwen-Image or 32B FLUX.2 transformer
in bf16 does not fit a 24-48 GB card. Here each process keeps 1/N of every frozen weight of the denoiser:
``torch.distributed.fsdp.fully_shard`` (the engine accelerate's FSDP2 plugin drives) is applied to each of its
blocks and then to the whole, so a block's weights are gathered just before it runs and freed after it, in the
forward pass and again in the backward pass's recomputation. The adapter's weights are left out of the sharding
(``ignored_params``): they stay whole on every process, DistributedDataParallel averages their gradients as it does
without sharding, and saving, resuming, EMA and the checks of the data-parallel path work on them unchanged.

The denoiser is loaded into CPU memory (as ``model.low_vram`` parks it) and goes to the device one block at a time
as it is sharded, so no device ever holds it whole. Everything that runs the denoiser must then run on every
process together (each gathers from all the others): previews are made by all processes, the main one saves them.

Not combined with a quantized base (its weights are not plain tensors FSDP can split) or layer offloading (FSDP
places the blocks itself); the config check says so.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter

INCOMPATIBLE = {"quantize": "a quantized base (its weights are not plain tensors FSDP can split; shard the bf16 base "
                            "instead, which takes 1/N of it per GPU)",
                "layer_offloading": "layer offloading (FSDP places the blocks itself: each GPU holds 1/N of them)"}
"""``model:`` options that sharding refuses, with the reason."""


def shard_denoiser(adapter: "ModelAdapter", keep: "Iterable[torch.nn.Parameter]", device: "torch.device") -> int:
    """Shard the adapter's denoiser over every process of the run (its blocks one by one, then the rest) onto
    ``device``; the parameters in ``keep`` (the trained adapter's) stay whole and where they are. Returns the number
    of blocks sharded."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from toolkit.models.blocks import blocks
    from toolkit.models.memory import unpark

    unpark(adapter)
    # Denoisers return views of their last layer's output (diffusers unpatchifies with .view); FSDP warns on every
    # call that an in-place op on one would skip its hook. The adapters' predict never writes into it.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    ignored = set(keep)
    found = [block for _, block in blocks(adapter.denoiser)]
    for block in found:
        fully_shard(block, mesh=mesh, ignored_params=ignored)
    fully_shard(adapter.denoiser, mesh=mesh, ignored_params=ignored)
    return len(found)


def local_bytes(module: "torch.nn.Module") -> int:
    """Bytes of ``module``'s parameters this process holds (a sharded parameter counts its local shard)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for param in module.parameters():
        local = param.to_local() if isinstance(param, DTensor) else param
        total += local.numel() * local.element_size()
    return total
