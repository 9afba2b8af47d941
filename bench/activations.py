"""Activation memory of a LoRA training step on the full-size denoisers, by gradient-checkpointing interval,
without a GPU: the models run on PyTorch's ``meta`` device (shapes only, no numbers, no memory).

Run:  python bench/activations.py                      # Z-Image (1024, rank 32) and SDXL (1024, rank 16)
      python bench/activations.py --only zimage --resolution 512 --intervals 1,2,4,0
      python bench/activations.py --only flux                # also flux2_klein_4b, flux2_klein_9b, flux2
      python bench/activations.py --only qwen_image          # also qwen_image_edit_plus (one megapixel reference)

What is counted: every tensor autograd saves for the backward pass during the forward (``saved_tensors_hooks``),
one count per storage, leaving out parameters (weights are not activations). A checkpointed block saves nothing
inside; its inputs are kept instead (``torch.utils.checkpoint``'s non-reentrant rule). In the backward pass a
checkpointed block is recomputed, so its own saved tensors exist again for a moment: the "backward peak" adds
the largest checkpointed block's. Interval N checkpoints one block in N (``train.gradient_checkpointing_interval``,
the blocks numbered in forward order as ``toolkit.train.checkpointing.IntervalCheckpointing`` does); 0 means no
checkpointing. The model, LoRA and inputs are bf16, as under autocast with working copies; ops that autocast
runs in float32 (softmax, norms) save a little more on a GPU. The GPU rows of docs/PERFORMANCE.md check the
method: their peak minus the weights should match the 1 and 0 rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import DENOISERS, default_rank, lora_network, markdown_table  # noqa: E402
from gpu_train import conditioning, denoiser  # noqa: E402

GIB = 2 ** 30


class SavedBytes:
    """Bytes of the distinct storages autograd saves, parameters excluded."""

    def __init__(self, params: set[int]):
        self.params = params
        self.seen: dict[int, int] = {}

    def add(self, tensor: Any) -> None:
        storage = tensor.untyped_storage()
        if storage._cdata not in self.params:
            self.seen.setdefault(storage._cdata, storage.nbytes())

    @property
    def total(self) -> int:
        return sum(self.seen.values())


class Checkpointing:
    """The function diffusers calls per block: the trainer's choice of blocks (``IntervalCheckpointing``);
    checkpointed blocks save only their inputs."""

    def __init__(self, interval: int, saved: SavedBytes):
        from toolkit.train.checkpointing import IntervalCheckpointing

        self.choice = IntervalCheckpointing(interval) if interval > 0 else None
        self.saved = saved
        self.calls = 0
        self.block_bytes: dict[Any, int] = {}

    def __call__(self, block: Any, *args: Any) -> Any:
        import torch

        self.calls += 1
        if self.choice is None or not self.choice.checkpointed(block):
            return block(*args)
        inner = SavedBytes(self.saved.params)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: inner.add(t) or t, lambda t: t):
            out = block(*args)
        for arg in args:
            if isinstance(arg, torch.Tensor):
                self.saved.add(arg)
        self.block_bytes[block] = inner.total
        return out


def efficient_attention(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
                        is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
    """SDPA as a GPU runs it: the memory-efficient kernel, which saves q, k, v, the output and the log-sum-exp
    (on the meta device SDPA would take the math path, which saves the whole attention matrix)."""
    import torch

    bias = attn_mask
    if bias is not None and bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, float("-inf"))
    return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout_p, is_causal,
                                                                  scale=scale)[0]


def measure(arch: str, args: argparse.Namespace, interval: int) -> tuple[float, float, float]:
    """(saved GiB, backward peak GiB, share of blocks checkpointed) for one interval."""
    import torch

    import torch.fx.experimental._config as fx_config

    fx_config.meta_nonzero_assume_all_nonzero = True  # caption masks are all ones: boolean indexing keeps everything
    model, adapter_class = denoiser(arch, argparse.Namespace(tiny=False, narrow=False), "meta", torch.bfloat16)
    adapter, network = lora_network(adapter_class, model, args.rank or default_rank(arch), arch)
    network.to(device="meta", dtype=torch.bfloat16)
    network.cast_inputs(False)
    model.train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved = SavedBytes(params)
    function = Checkpointing(interval, saved)
    model.enable_gradient_checkpointing(function)
    latents, cond, info = conditioning(arch, args, "meta", torch.bfloat16)
    timesteps = torch.full((args.batch,), 500.0, device="meta")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = efficient_attention
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.add(t) or t, lambda t: t):
            adapter.predict(latents, timesteps, cond, info)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    recompute = max(function.block_bytes.values(), default=0)
    share = len(function.block_bytes) / max(1, function.calls)
    return saved.total / GIB, (saved.total + recompute) / GIB, share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(DENOISERS), help="one architecture (default: zimage and sdxl)")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--intervals", default="1,2,3,4,0", help="checkpointing intervals; 0 = no checkpointing")
    args = parser.parse_args(argv)
    args.tiny = False
    rows = []
    for arch in ["zimage", "sdxl"] if args.only is None else [args.only]:
        for interval in (int(value) for value in args.intervals.split(",")):
            saved, peak, share = measure(arch, args, interval)
            label = "none" if interval == 0 else f"1 in {interval}"
            rows.append([DENOISERS[arch][0], str(args.resolution), label,
                         f"{share:.0%}", f"{saved:.2f}", f"{peak:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    print()
    print(markdown_table(["model", "res", "checkpointed", "blocks checkpointed", "saved activations GiB",
                          "backward peak GiB (+ one recomputed block)"], rows))
    print(f"\nrerun: python bench/activations.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
