"""The optimizer's step over a full-size LoRA's tensors, per tensor and flat (``train.flat_optimizer``), side by side.

Run (GPU):  python bench/optimizer_step.py                       # SDXL rank 16 and Z-Image rank 32, four optimizers
Run (CPU):  python bench/optimizer_step.py --values-per-tensor 8 # the same tensor counts, 8 values each: host time only

The LoRA is built as the trainer builds it on the architecture's default targets (bench/fullsize.py), on a ``meta``
denoiser (no base weights are made), and its tensors are then made on the device: SDXL's rank-16 LoRA has 1,444 of
them, Z-Image's rank-32 one 476. They go into ``WorkingCopies`` as the trainer's do, with random gradients; the time is
``WorkingCopies.step`` (clipping to 1.0, the optimizer's step, the gradients dropped), the median of ``--steps`` after
two warm-up steps, per tensor (``flat_optimizer: false``) and flat, in the same process. The GPU's step is short,
so the host's work per tensor (bitsandbytes and Prodigy loop over tensors in Python) is most of the per-tensor time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import DENOISERS, build, default_rank, device_text, lora_network, markdown_table, synchronize  # noqa: E402
from results import finish  # noqa: E402

ARCHS = ("sdxl", "zimage")
OPTIMIZERS = ("adamw", "adamw8bit", "lion", "prodigy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ARCHS), help=f"architectures, comma-separated ({', '.join(ARCHS)})")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="optimizer names (train.optimizer), comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after two warm-up steps)")
    parser.add_argument("--values-per-tensor", type=int, metavar="N",
                        help="each tensor N values instead of its shape: the same count of tensors, host time only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", metavar="DIR", help="append the figures to DIR/<date>-<device>.json (default on a GPU: bench/results)")
    parser.add_argument("--no-results", action="store_true", help="write no results file")
    return parser.parse_args(argv)


def lora_tensors(arch: str, device: Any, values: int | None) -> list[Any]:
    """The LoRA's parameters (float32, on ``device``): their full shapes, or ``values`` values each."""
    import diffusers
    import torch

    from toolkit.registry import load_object

    _, class_name, config, _, adapter = DENOISERS[arch]
    model = build(getattr(diffusers, class_name), config, "meta", torch.bfloat16)
    _, network = lora_network(load_object(adapter), model, default_rank(arch), arch)
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for param in network.parameters():
        shape = (values,) if values else param.shape
        tensors.append(torch.nn.Parameter((torch.randn(shape, generator=generator) * 0.02).to(device)))
    return tensors


def time_steps(tensors: list[Any], optimizer_name: str, flat: bool, steps: int, device: Any) -> float:
    """Median milliseconds of ``WorkingCopies.step`` over ``tensors`` (copies; a fresh optimizer)."""
    import torch

    from toolkit.train.optimizers import build_optimizer
    from toolkit.train.working import WorkingCopies

    params = [torch.nn.Parameter(t.detach().clone()) for t in tensors]
    working = WorkingCopies(params, torch.bfloat16, flat=flat)
    groups = working.optimizer_groups([{"params": params, "lr": 1.0 if optimizer_name == "prodigy" else 1e-4}])
    optimizer = build_optimizer(optimizer_name, groups, groups[0]["lr"], {})
    generator = torch.Generator(device=device).manual_seed(1)
    times = []
    for step in range(steps + 2):
        with working.active():  # the gradients arrive as the backward pass leaves them: bf16, one per tensor
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator, device=device, dtype=torch.bfloat16)
        synchronize(device)
        start = time.perf_counter()
        working.step(optimizer, 1.0)
        synchronize(device)
        if step >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from toolkit.devices import resolve_device
    from toolkit.errors import EaselError
    from toolkit.log import setup_console
    from toolkit.train.optimizers import FLAT_OPTIMIZERS

    setup_console()
    device = resolve_device(args.device)
    archs, names = args.only.split(","), args.optimizers.split(",")
    unknown = [name for name in names if name not in FLAT_OPTIMIZERS]
    if unknown:
        raise SystemExit(f"optimizer_step.py: {', '.join(unknown)} cannot step flat; choose from {', '.join(FLAT_OPTIMIZERS)}")
    size = f"{args.values_per_tensor} values per tensor" if args.values_per_tensor else "full shapes"
    print(f"device: {device_text(device)}; LoRA tensors in {size}; {args.steps} timed steps after 2 warm-up steps")
    rows, records = [], []
    for arch in archs:
        tensors = lora_tensors(arch, device, args.values_per_tensor)
        values = sum(t.numel() for t in tensors)
        for name in names:
            try:
                per_tensor = time_steps(tensors, name, False, args.steps, device)
                flat = time_steps(tensors, name, True, args.steps, device)
            except EaselError as err:  # its package is not installed
                rows.append([f"{arch} rank {default_rank(arch)}", f"{len(tensors)}", f"{values / 1e6:.2f}M", name,
                             "n/a", "n/a", str(err).split(":")[0]])
                continue
            rows.append([f"{arch} rank {default_rank(arch)}", f"{len(tensors)}", f"{values / 1e6:.2f}M", name,
                         f"{per_tensor:.2f}", f"{flat:.2f}", f"{flat / per_tensor:.3f}"])
            common = {"arch": arch, "tensors": len(tensors), "values": values, "optimizer": name, "size": size}
            per_tensor_case = f"{arch}, {name}, per tensor, {size}"
            records += [{**common, "case": per_tensor_case, "flat": False, "optimizer_ms": per_tensor, "baseline": None},
                        {**common, "case": f"{arch}, {name}, flat, {size}", "flat": True, "optimizer_ms": flat,
                         "baseline": {"case": per_tensor_case, "optimizer_ms": per_tensor, "ratio": round(flat / per_tensor, 4)}}]
    header = ["LoRA", "tensors", "values", "optimizer", "per tensor ms", "flat ms", "flat / per tensor"]
    print(f"\n{markdown_table(header, rows)}\n")
    finish("optimizer_step.py", argv if argv is not None else sys.argv[1:], device, lambda: records, args.results, args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
