"""LoRA training speed and memory of the full-size Z-Image (6B) and SDXL denoisers (random weights, no download).

Run (GPU):  python bench/gpu_train.py                          # Z-Image rank 32 and SDXL rank 16 at 1024px, bf16 and 8-bit base
            python bench/gpu_train.py --only zimage --resolution 512 --quantize qint8,int8,float8
            python bench/gpu_train.py --only sdxl --optimizer adamw8bit
            python bench/gpu_train.py --offload 0.5            # also: 8-bit base with half the blocks streamed from CPU memory
Run (CPU, to check it works): python bench/gpu_train.py --tiny --steps 2

What is measured is easel's own machinery on the real denoiser architectures (configs and their sources: bench/fullsize.py):
the adapter's ``predict`` (the call training makes), LoRA layers from ``toolkit.network.Network`` on the
architecture's default targets (float32 weights computed through bf16 working copies, as the trainer does), the noise, timesteps and loss from
``toolkit.train.noise`` / ``toolkit.train.loss``, the optimizer from ``toolkit.train.optimizers`` (fused AdamW
on CUDA), gradient clipping, bf16 autocast (as accelerate's mixed precision), gradient checkpointing, and for
the 8-bit base ``toolkit.models.memory.quantize_by_units`` (the model is built in CPU memory and moved to the
GPU one block at a time as it is quantized, like ``model.low_vram``). Conditioning is random with the real
shapes, as if text embeddings and latents were cached (no text encoder or VAE on the GPU).

Per configuration: s/step (median after warm-up), peak allocated GPU memory (torch.cuda.max_memory_allocated
over the training steps, weights included; the loading peak is shown apart), and model-FLOPs utilisation.
FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on one bf16 training step (matmuls,
convolutions and attention); with gradient checkpointing the recomputed forward is counted once more by
the counter (hardware FLOPs), so the model FLOPs are that count minus one forward pass, counted the same
way. MFU = model FLOPs / step time / peak dense bf16 FLOP/s (``--peak-tflops``; default by the GPU's name,
e.g. H100 SXM / H200 989 TFLOP/s). Quantized configurations do the same math, so they reuse the bf16 count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import (  # noqa: E402
    SDXL_POOLED_TINY, SDXL_UNET, SDXL_UNET_TINY, ZIMAGE_TRANSFORMER, ZIMAGE_TRANSFORMER_TINY, build, default_rank,
    device_text, lora_network, markdown_table, peak_gib, peak_tflops, reset_memory, synchronize)


@dataclass
class Case:
    arch: str
    label: str
    qtype: str | None
    offload: float | None


@dataclass
class Result:
    case: Case
    seconds: float | None = None
    peak: float | None = None
    load_peak: float | None = None
    flops: float | None = None
    hardware_flops: float | None = None
    note: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["zimage", "sdxl"], help="one architecture (default: both)")
    parser.add_argument("--resolution", type=int, help="image side in pixels (default 1024; 64 with --tiny)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: 32 for Z-Image, 16 for SDXL)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quantize", default="qint8", help="8-bit base type(s), comma-separated (qint8, int8, float8, qfloat8, ...); 'none' skips")
    parser.add_argument("--offload", type=float, help="also run the first quantized type with this fraction of blocks offloaded")
    parser.add_argument("--optimizer", default="adamw", help="adamw (fused), adamw8bit, ...")
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--checkpoint-interval", type=int, default=1,
                        help="checkpoint one block in N (train.gradient_checkpointing_interval; offloaded blocks always)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--text-tokens", type=int, default=128, help="caption length of the random conditioning")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s for MFU (default: by GPU name)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (for a CPU check that the script works)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--adapter-dtype", choices=["fp32", "bf16"], default="fp32",
                        help="precision of the LoRA weights (the trainer keeps fp32; bf16 shows the cost of the casts)")
    parser.add_argument("--cast-inputs", action="store_true", help="keep peft's input casts under autocast (the trainer drops them)")
    parser.add_argument("--no-working-copies", action="store_true",
                        help="let autocast cast the float32 LoRA weights in every layer (the trainer before train.working_copies)")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="bf16 autocast on the CPU too (with --profile: count the operators a GPU step launches)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of one step per configuration")
    return parser.parse_args(argv)


def cases(args: argparse.Namespace) -> list[Case]:
    types = [t for t in args.quantize.split(",") if t and t != "none"]
    found = []
    for arch in ["zimage", "sdxl"] if args.only is None else [args.only]:
        found.append(Case(arch, "bf16", None, None))
        found += [Case(arch, f"{qtype} base", qtype, None) for qtype in types]
        if args.offload is not None and types:
            found.append(Case(arch, f"{types[0]} base, {args.offload:g} offloaded", types[0], args.offload))
    return found


def denoiser(arch: str, tiny: bool, device: Any, dtype: Any) -> tuple[Any, Any]:
    """The random-weight denoiser and its adapter class."""
    if arch == "zimage":
        from diffusers import ZImageTransformer2DModel

        from extensions.z_image.adapter import ZImageAdapter
        return build(ZImageTransformer2DModel, ZIMAGE_TRANSFORMER_TINY if tiny else ZIMAGE_TRANSFORMER, device, dtype), ZImageAdapter
    from diffusers import UNet2DConditionModel

    from extensions.sdxl.adapter import SDXLAdapter
    return build(UNet2DConditionModel, SDXL_UNET_TINY if tiny else SDXL_UNET, device, dtype), SDXLAdapter


def schedule(arch: str) -> Any:
    """The training noise schedule: Z-Image's flow matching (shift 3), SDXL's scaled-linear DDPM (epsilon)."""
    from toolkit.models.base import NoiseSchedule

    if arch == "zimage":
        return NoiseSchedule("flowmatch", "flow", 1000, shift=3.0)
    from toolkit.models.pipeline_adapter import ddpm_schedule

    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "prediction_type": "epsilon"}
    return ddpm_schedule(config, None)


def conditioning(arch: str, args: argparse.Namespace, device: Any, dtype: Any) -> tuple[Any, dict[str, Any], Any]:
    """Random latents, cached-style text conditioning of the real shapes, and SDXL's image info."""
    import torch

    from toolkit.models.base import ImageInfo

    g = torch.Generator().manual_seed(1)
    side = args.resolution // 8
    size = (args.resolution, args.resolution)
    if arch == "zimage":
        width = ZIMAGE_TRANSFORMER_TINY["cap_feat_dim"] if args.tiny else ZIMAGE_TRANSFORMER["cap_feat_dim"]
        latents = torch.randn(args.batch, 16, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, args.text_tokens, width, generator=g),
                "prompt_mask": torch.ones(args.batch, args.text_tokens, dtype=torch.bool)}
        info = None
    else:
        width = SDXL_UNET_TINY["cross_attention_dim"] if args.tiny else SDXL_UNET["cross_attention_dim"]
        latents = torch.randn(args.batch, 4, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, 77, width, generator=g),
                "pooled_prompt_embeds": torch.randn(args.batch, SDXL_POOLED_TINY if args.tiny else 1280, generator=g)}
        info = [ImageInfo(size, (0, 0), size)] * args.batch
    cond = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in cond.items()}
    return latents.to(device, dtype), cond, info


def compute_dtype(args: argparse.Namespace) -> Any:
    """bf16; float32 for the tiny CPU check (this CPU has no fast bf16 matmul) unless --cpu-bf16 asks for it."""
    import torch

    return torch.float32 if args.tiny and args.device_type == "cpu" and not args.cpu_bf16 else torch.bfloat16


def prepare(case: Case, args: argparse.Namespace, device: Any, result: Result) -> tuple[Any, Any, Any, Any]:
    """The denoiser (quantized block by block from CPU memory for an 8-bit base), its adapter and LoRA network."""
    import torch

    from toolkit.models.memory import offload_blocks, quantize_by_units
    from toolkit.train.setup import enable_checkpointing

    dtype = compute_dtype(args)
    model, adapter_class = denoiser(case.arch, args.tiny, "cpu" if case.qtype else device, dtype)
    if case.qtype:
        quantize_by_units(model, case.qtype, adapter_class.quantize_exclusions, device, park="cpu" if case.offload else None)
    interval = None if args.no_checkpointing else enable_checkpointing(model, adapter_class.denoiser_name, args.checkpoint_interval)
    model.train()
    adapter, network = lora_network(adapter_class, model, args.rank or default_rank(case.arch))
    network.float() if args.adapter_dtype == "fp32" else network.to(dtype)
    network.cast_inputs(dtype == torch.float32 or args.cast_inputs)  # as the trainer does under mixed precision
    if case.offload is not None:
        offloader = offload_blocks(model, device, case.offload)
        result.note = f"{len(offloader.blocks)} blocks streamed"
        if interval is not None:
            interval.always_checkpoint(offloader.blocks)
    network.to(device)
    result.load_peak = peak_gib(device)
    return model, adapter, network, interval


def training_step(case: Case, args: argparse.Namespace, device: Any) -> tuple[Callable[[], float], Any, Result]:
    import torch

    from toolkit.train.loss import diffusion_loss
    from toolkit.train.noise import Objective
    from toolkit.train.optimizers import build_optimizer
    from toolkit.train.working import WorkingCopies

    result = Result(case)
    model, adapter, network, interval = prepare(case, args, device, result)
    objective = Objective(schedule(case.arch), timestep_type="sigmoid")
    optimizer = build_optimizer(args.optimizer, network.param_groups({}, 1e-4), 1e-4, {})
    params = list(network.parameters())
    dtype = compute_dtype(args)
    # as the trainer does under bf16 (train.working_copies): float32 masters, one bf16 copy per step
    working = (WorkingCopies(params, torch.bfloat16)
               if dtype == torch.bfloat16 and args.adapter_dtype == "fp32" and not args.no_working_copies else None)
    latents, cond, info = conditioning(case.arch, args, device, dtype)
    generator = torch.Generator().manual_seed(2)

    def step() -> float:
        noised = objective.apply(latents, generator)
        with working.active() if working is not None else nullcontext():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                prediction = adapter.predict(noised.noisy, noised.timesteps, cond, info)
            loss = diffusion_loss(prediction, noised.target, "mse", weights=noised.weights)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def forward() -> None:
        noised = objective.apply(latents, generator)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            adapter.predict(noised.noisy, noised.timesteps, cond, info)

    step.forward = forward  # type: ignore[attr-defined]
    step.interval = interval  # type: ignore[attr-defined]
    return step, model, result


def count_flops(function: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def measure(case: Case, args: argparse.Namespace, device: Any, flops: dict[str, tuple[float, float]]) -> Result:
    step, model, result = training_step(case, args, device)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    if case.qtype is None:
        hardware = count_flops(step)
        if args.checkpoint_interval > 1 and not args.no_checkpointing:
            # model FLOPs do not depend on checkpointing: count them with every block checkpointed (recomputation
            # is then exactly one forward pass), then go back to the interval
            model.enable_gradient_checkpointing()
            model_flops = count_flops(step) - count_flops(step.forward)  # type: ignore[attr-defined]
            model.enable_gradient_checkpointing(step.interval)  # type: ignore[attr-defined]
        else:
            forward = count_flops(step.forward) if not args.no_checkpointing else 0.0  # type: ignore[attr-defined]
            model_flops = hardware - forward
        flops[case.arch] = (model_flops, hardware)
    if args.profile:
        profile(step, device)
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    result.seconds = statistics.median(times)
    result.peak = peak_gib(device)
    result.flops, result.hardware_flops = flops.get(case.arch, (None, None))
    del step, model
    return result


def profile(step: Callable[[], Any], device: Any, rows: int = 18) -> None:
    """One step under torch.profiler: the operators that take the most GPU time, and the most CPU time."""
    import torch
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        step()
        synchronize(device)
    averages = prof.key_averages()
    for key in (["self_cuda_time_total"] if device.type == "cuda" else []) + ["self_cpu_time_total"]:
        print(averages.table(sort_by=key, row_limit=rows, max_name_column_width=60), flush=True)
    # Operator counts do not depend on the device, so a CPU run shows what a change does to GPU launch overhead.
    calls = {event.key: event.count for event in averages if event.key.startswith("aten::")}
    print(f"operator calls per step: {sum(calls.values())} aten ops, {launching(prof.events())} of them launch kernels, "
          f"{calls.get('aten::_to_copy', 0)} aten::_to_copy, {calls.get('aten::mm', 0)} aten::mm", flush=True)


NO_KERNEL = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "view_as", "as_strided", "reshape", "_reshape_alias", "transpose", "t", "permute", "expand",
    "expand_as", "slice", "narrow", "select", "unsqueeze", "squeeze", "detach", "alias", "unflatten", "flatten", "split",
    "split_with_sizes", "chunk", "unbind", "empty", "empty_like", "empty_strided", "_has_compatible_shallow_copy_type",
    "lift_fresh", "item", "_local_scalar_dense", "is_nonzero", "result_type", "resolve_conj", "resolve_neg", "set_",
    "contiguous", "to", "numpy_T", "_nested_tensor_from_mask_left_aligned"))


def launching(events: Any) -> int:
    """Operators that launch a kernel on a GPU: innermost aten calls (a composite op such as ``linear`` only
    calls others) that are not views, metadata or allocations."""
    count = 0
    for event in events:
        if not event.name.startswith("aten::") or event.name in NO_KERNEL:
            continue
        if not any(child.name.startswith("aten::") for child in event.cpu_children):
            count += 1
    return count


def run_case(case: Case, args: argparse.Namespace, device: Any, flops: dict[str, tuple[float, float]]) -> Result:
    """One configuration, its errors (out of memory included) reported instead of raised."""
    import torch

    reset_memory(device)
    try:
        return measure(case, args, device, flops)
    except torch.cuda.OutOfMemoryError:
        return Result(case, note=f"out of memory (peak {peak_gib(device) or 0:.1f} GiB)")
    except Exception as err:  # noqa: BLE001 - report and go on with the next configuration
        traceback.print_exc()
        return Result(case, note=f"error: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
    finally:
        reset_memory(device)


def row(result: Result, args: argparse.Namespace, peak: float | None) -> list[str]:
    case = result.case
    name = {"zimage": "Z-Image 6B" if not args.tiny else "Z-Image (tiny)", "sdxl": "SDXL UNet" if not args.tiny else "SDXL (tiny)"}[case.arch]
    rank = args.rank or default_rank(case.arch)
    gib = (lambda v: f"{v:.2f}" if v is not None else "n/a")
    tflop = f"{result.flops / 1e12:.3g}" if result.flops else "n/a"
    mfu = (f"{100 * result.flops / result.seconds / (peak * 1e12):.1f}%"
           if result.flops and result.seconds and peak else "n/a")
    seconds = f"{result.seconds:.3f}" if result.seconds is not None else "-"
    return [name, case.label, f"{args.resolution}", f"{rank}", seconds, gib(result.peak), gib(result.load_peak), tflop, mfu, result.note]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from toolkit.devices import resolve_device
    from toolkit.log import setup_console

    setup_console()
    args.resolution = args.resolution or (64 if args.tiny else 1024)
    device = resolve_device(args.device)
    args.device_type = device.type
    peak = peak_tflops(device, args.peak_tflops)
    print(f"device: {device_text(device)}; peak bf16 {peak or 'unknown'} TFLOP/s; {str(compute_dtype(args))[6:]}, batch {args.batch}, "
          f"{'no ' if args.no_checkpointing else ''}gradient checkpointing"
          f"{f' (one block in {args.checkpoint_interval})' if args.checkpoint_interval > 1 and not args.no_checkpointing else ''}, {args.optimizer}, {args.steps} timed steps "
          f"after {args.warmup} warm-up")
    flops: dict[str, tuple[float, float]] = {}
    rows = []
    for case in cases(args):
        result = run_case(case, args, device, flops)
        rows.append(row(result, args, peak))
        print("  " + " | ".join(rows[-1]), flush=True)
    header = ["model", "base", "res", "rank", "s/step", "peak GiB", "load peak GiB", "TFLOP/step", "MFU", "notes"]
    print(f"\n{markdown_table(header, rows)}\n")
    print("rerun: python bench/gpu_train.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
