"""LoRA training speed and memory of the full-size Z-Image (6B), SDXL, FLUX.1 and FLUX.2 denoisers (random weights, no download).

Run (GPU):  python bench/gpu_train.py                          # Z-Image rank 32 and SDXL rank 16 at 1024px, bf16 and 8-bit base
            python bench/gpu_train.py --only zimage --resolution 512 --quantize qint8,int8,float8
            python bench/gpu_train.py --only sdxl --optimizer adamw8bit
            python bench/gpu_train.py --only flux             # also flux2_klein_4b, flux2_klein_9b, flux2 (32B: 8-bit only on <80 GB)
            python bench/gpu_train.py --only qwen_image       # also qwen_image_edit_plus (with one megapixel reference)
            python bench/gpu_train.py --offload 0.5            # also: 8-bit base with half the blocks streamed from CPU memory
            python bench/gpu_train.py --only zimage --quantize none --variants default,autocast,ckpt=2,ckpt=0,compile
                                                               # trainer options side by side on one model
            python bench/gpu_train.py --only zimage --quantize float8_mm --variants default,float8_mm,float8_mm+compile,float8_mm+compile+ckpt=0
                                                               # float8 matmuls for the frozen base (sm_89+)
Run (CPU, to check it works): python bench/gpu_train.py --tiny --steps 2
Count the kernel launches of one full-size step on the CPU (the operators do not depend on the device):
            python bench/gpu_train.py --narrow --cpu-bf16 --only sdxl --quantize none --resolution 256 --steps 1 --warmup 2 \
                --profile --variants default,compile --no-results

What is measured is easel's own machinery on the real denoiser architectures (configs and their sources: bench/fullsize.py):
the trainer's ``DiffusionStep`` (noise, timesteps, the adapter's ``predict``, loss), LoRA layers from
``toolkit.network.Network`` on the architecture's default targets (float32 weights computed through bf16 working
copies, as the trainer does), the optimizer from ``toolkit.train.optimizers`` (fused AdamW
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
import re
import statistics
import sys
import time
import traceback
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import (  # noqa: E402
    DENOISERS, NARROW, SDXL_POOLED_TINY, build, default_rank, device_text, lora_network, markdown_table, peak_gib, peak_tflops,
    reset_memory, synchronize)
from results import finish, metric, with_baselines  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """How the trainer runs the step: compared side by side on one model in one process (``--variants``)."""

    name: str
    working_copies: bool = True
    interval: int = 1
    """checkpoint one block in ``interval``; 0: no checkpointing"""
    compile: bool = False
    mode: str = "default"
    """torch.compile's mode (``train.compile_mode``); ``graphs``: reduce-overhead, CUDA graphs"""
    qtype: str | None = None
    """the 8-bit base of ``--quantize`` it runs on (a part naming it); None: the bf16 model"""


@dataclass
class Case:
    arch: str
    label: str
    qtype: str | None
    offload: float | None
    variants: list[Variant]


@dataclass
class Result:
    case: Case
    variant: Variant
    seconds: float | None = None
    peak: float | None = None
    load_peak: float | None = None
    flops: float | None = None
    note: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(DENOISERS), help="one architecture (default: zimage and sdxl)")
    parser.add_argument("--resolution", type=int, help="image side in pixels (default 1024; 64 with --tiny)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: 32 for Z-Image, 16 for SDXL and FLUX)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quantize", default="qint8", help="8-bit base type(s), comma-separated (qint8, int8, float8, qfloat8, ...); 'none' skips")
    parser.add_argument("--no-bf16", action="store_true", help="only the 8-bit bases (no MFU: the FLOPs are counted on bf16)")
    parser.add_argument("--offload", type=float, help="also run the first quantized type with this fraction of blocks offloaded")
    parser.add_argument("--optimizer", default="adamw", help="adamw (fused), adamw8bit, ...")
    parser.add_argument("--per-tensor-optimizer", action="store_true",
                        help="train.flat_optimizer: false (the optimizer steps every adapter tensor, not one flat one)")
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--checkpoint-interval", type=int, default=1,
                        help="checkpoint one block in N (train.gradient_checkpointing_interval; offloaded blocks always)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--text-tokens", type=int, default=128, help="caption length of the random conditioning")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s for MFU (default: by GPU name)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (for a CPU check that the script works)")
    parser.add_argument("--narrow", action="store_true",
                        help="full depth at 1/16 width (Z-Image, SDXL): the full model's operators per step, for --profile on the CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--adapter-dtype", choices=["fp32", "bf16"], default="fp32",
                        help="precision of the LoRA weights (the trainer keeps fp32; bf16 shows the cost of the casts)")
    parser.add_argument("--cast-inputs", action="store_true", help="keep peft's input casts under autocast (the trainer drops them)")
    parser.add_argument("--no-working-copies", action="store_true",
                        help="let autocast cast the float32 LoRA weights in every layer (the trainer before train.working_copies)")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="bf16 autocast on the CPU too (with --profile: count the operators a GPU step launches)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser blocks (train.compile)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile's backend; aot_eager: the same compiled regions without code generation (fast, "
                             "for --profile's host dispatch counts on the CPU)")
    parser.add_argument("--variants", help=VARIANTS_HELP)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of one step per configuration")
    parser.add_argument("--results", metavar="DIR", help="append the figures to DIR/<date>-<device>.json (default on a GPU: bench/results)")
    parser.add_argument("--no-results", action="store_true", help="write no results file")
    return parser.parse_args(argv)


VARIANTS_HELP = ("trainer variants timed one after the other on the same model, comma-separated, each a '+'-joined set "
                 "of: default (the other flags), autocast (no working copies), ckpt=N (checkpoint one block in N; 0: none), "
                 "compile, graphs (compiled with mode reduce-overhead: CUDA graphs), and a type of --quantize (run on that "
                 "8-bit base instead of bf16, which otherwise runs only the first); e.g. default,autocast,ckpt=2,compile,"
                 "compile+ckpt=2,graphs,float8_mm+compile (compiled ones run last, graphs after compile)")


def default_variant(args: argparse.Namespace) -> Variant:
    """The variant the other flags describe."""
    return Variant("default", working_copies=not args.no_working_copies,
                   interval=0 if args.no_checkpointing else args.checkpoint_interval, compile=args.compile)


def parse_variants(args: argparse.Namespace) -> list[Variant]:
    """``--variants``, or the one variant the other flags describe."""
    base = default_variant(args)
    found = []
    for text in args.variants.split(",") if args.variants else ["default"]:
        variant = replace(base, name=text)
        for part in text.split("+"):
            if part == "autocast":
                variant = replace(variant, working_copies=False)
            elif part == "compile":
                variant = replace(variant, compile=True)
            elif part == "graphs":
                variant = replace(variant, compile=True, mode="reduce-overhead")
            elif part.startswith("ckpt=") and part[5:].isdigit():
                variant = replace(variant, interval=int(part[5:]))
            elif part in quantized(args):
                variant = replace(variant, qtype=part)
            elif part != "default":
                raise SystemExit(f"gpu_train.py: --variants {args.variants!r}: unknown part {part!r}. Use {VARIANTS_HELP}.")
        found.append(variant)
    return sorted(found, key=lambda variant: (variant.compile, variant.mode != "default"))  # compiling cannot be undone


def quantized(args: argparse.Namespace) -> list[str]:
    """The 8-bit types of ``--quantize``."""
    return [t for t in args.quantize.split(",") if t and t != "none"]


def cases(args: argparse.Namespace) -> list[Case]:
    """bf16, then each 8-bit type, then the offloaded one, per architecture. bf16 runs the variants that name no 8-bit
    type (and counts the FLOPs: without it the 8-bit rows show no MFU; with none, bf16 is not built); an 8-bit type
    runs those naming it, or else the first of bf16's."""
    types = quantized(args)
    variants = parse_variants(args)
    plain = [variant for variant in variants if variant.qtype is None]
    first = plain[:1] or [default_variant(args)]
    found = []
    for arch in ["zimage", "sdxl"] if args.only is None else [args.only]:
        if not args.no_bf16 and plain:
            found.append(Case(arch, "bf16", None, None, plain))
        found += [Case(arch, f"{qtype} base", qtype, None, [v for v in variants if v.qtype == qtype] or first)
                  for qtype in types]
        if args.offload is not None and types:
            found.append(Case(arch, f"{types[0]} base, {args.offload:g} offloaded", types[0], args.offload, first))
    return found


def model_config(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """The denoiser's config: full size, ``--tiny`` or ``--narrow`` (``fullsize.NARROW``); bench/activations.py's
    arguments have no ``narrow``."""
    if getattr(args, "narrow", False):
        if arch not in NARROW:
            raise SystemExit(f"gpu_train.py: --narrow has configs for {', '.join(NARROW)}, not {arch}.")
        return NARROW[arch]
    return DENOISERS[arch][3 if args.tiny else 2]


def denoiser(arch: str, args: argparse.Namespace, device: Any, dtype: Any) -> tuple[Any, Any]:
    """The random-weight denoiser and its adapter class (``fullsize.DENOISERS``)."""
    import diffusers

    from toolkit.registry import load_object

    _, class_name, _, _, adapter = DENOISERS[arch]
    return build(getattr(diffusers, class_name), model_config(arch, args), device, dtype), load_object(adapter)


def schedule(arch: str) -> Any:
    """The training noise schedule: Z-Image's flow matching (shift 3), FLUX's and Qwen-Image's with their
    resolution-dependent shift, SDXL's scaled-linear DDPM (epsilon)."""
    from toolkit.models.base import NoiseSchedule, ResolutionShift

    if arch == "zimage":
        return NoiseSchedule("flowmatch", "flow", 1000, shift=3.0)
    if arch.startswith("flux"):
        return NoiseSchedule("flowmatch", "flow", 1000, shift=3.0, resolution_shift=ResolutionShift())
    if arch.startswith("qwen_image"):
        from extensions.qwen_image.tiny import SCHEDULER

        return NoiseSchedule("flowmatch", "flow", 1000, resolution_shift=ResolutionShift.from_scheduler_config(SCHEDULER))
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
    config = model_config(arch, args)
    if arch == "zimage":
        latents = torch.randn(args.batch, 16, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, args.text_tokens, config["cap_feat_dim"], generator=g),
                "prompt_mask": torch.ones(args.batch, args.text_tokens, dtype=torch.bool)}
    elif arch == "flux":
        latents = torch.randn(args.batch, 16, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, args.text_tokens, config["joint_attention_dim"], generator=g),
                "pooled_prompt_embeds": torch.randn(args.batch, config["pooled_projection_dim"], generator=g)}
    elif arch.startswith("flux2"):
        latents = torch.randn(args.batch, 32, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, args.text_tokens, config["joint_attention_dim"], generator=g)}
    elif arch.startswith("qwen_image"):
        latents = torch.randn(args.batch, 16, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, args.text_tokens, config["joint_attention_dim"], generator=g),
                "prompt_mask": torch.ones(args.batch, args.text_tokens, dtype=torch.bool)}
        if arch == "qwen_image_edit_plus":  # one reference at the pipeline's megapixel (the target's size with --tiny)
            reference = side if args.tiny else 128
            cond["reference_latents_0"] = torch.randn(args.batch, 16, reference, reference, generator=g)
    else:
        latents = torch.randn(args.batch, 4, side, side, generator=g)
        cond = {"prompt_embeds": torch.randn(args.batch, 77, config["cross_attention_dim"], generator=g),
                "pooled_prompt_embeds": torch.randn(args.batch, SDXL_POOLED_TINY if args.tiny else 1280, generator=g)}
    info = [ImageInfo(size, (0, 0), size)] * args.batch
    cond = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in cond.items()}
    return latents.to(device, dtype), cond, info


def compute_dtype(args: argparse.Namespace) -> Any:
    """bf16; float32 for the tiny CPU check (this CPU has no fast bf16 matmul) unless --cpu-bf16 asks for it."""
    import torch

    small = args.tiny or args.narrow
    return torch.float32 if small and args.device_type == "cpu" and not args.cpu_bf16 else torch.bfloat16


@dataclass
class Setup:
    """One model with its LoRA network and optimizer, shared by a case's variants."""

    model: Any
    adapter: Any
    network: Any
    params: list[Any]
    optimizer: Any
    working: Any
    streamed: list[Any]
    load_peak: float | None
    note: str = ""
    compiled: str | None = None
    """the mode the blocks were compiled with"""


def prepare(case: Case, args: argparse.Namespace, device: Any) -> Setup:
    """The denoiser (quantized block by block from CPU memory for an 8-bit base), its adapter, LoRA network and
    optimizer, and the working copies the trainer makes under bf16."""
    import torch

    from toolkit.models.memory import offload_blocks, quantize_by_units
    from toolkit.train.optimizers import FLAT_OPTIMIZERS, build_optimizer
    from toolkit.train.working import WorkingCopies

    dtype = compute_dtype(args)
    model, adapter_class = denoiser(case.arch, args, "cpu" if case.qtype else device, dtype)
    if case.qtype:
        quantize_by_units(model, case.qtype, adapter_class.quantize_exclusions, device, park="cpu" if case.offload else None)
    model.train()
    adapter, network = lora_network(adapter_class, model, args.rank or default_rank(case.arch), case.arch)
    adapter.device = device
    network.float() if args.adapter_dtype == "fp32" else network.to(dtype)
    streamed, note = [], ""
    if case.offload is not None:
        streamed = list(offload_blocks(model, device, case.offload).blocks)
        note = f"{len(streamed)} blocks streamed"
    network.to(device)
    load_peak = peak_gib(device)
    groups = network.param_groups({}, 1e-4)
    params = [p for group in groups for p in group["params"]]
    # as the trainer does under bf16 on a GPU (train.working_copies, train.flat_optimizer's default there): float32
    # masters, one bf16 copy per step, the optimizer stepping one flat tensor (on the CPU too, here)
    flat = args.optimizer in FLAT_OPTIMIZERS and not args.per_tensor_optimizer
    working = WorkingCopies(params, torch.bfloat16, flat=flat, owner=network) if dtype == torch.bfloat16 and args.adapter_dtype == "fp32" else None
    optimizer = build_optimizer(args.optimizer, working.optimizer_groups(groups) if working else groups, 1e-4, {})
    return Setup(model, adapter, network, params, optimizer, working, streamed, load_peak, note)


def apply_variant(setup: Setup, variant: Variant) -> None:
    """Checkpointing as the variant asks (offloaded blocks always) and, once, compiled blocks."""
    from toolkit.models.memory import compile_blocks
    from toolkit.train.checkpointing import enable_checkpointing

    if variant.interval == 0:
        setup.model.disable_gradient_checkpointing()
    else:
        interval = enable_checkpointing(setup.model, setup.adapter.denoiser_name, variant.interval)
        if interval is not None:
            interval.always_checkpoint(setup.streamed)
    if variant.compile and setup.compiled != variant.mode:
        import torch._dynamo

        torch._dynamo.reset()  # a new mode compiles anew
        compile_blocks(setup.adapter.compile_units(), skip=setup.streamed, mode=variant.mode, constant_floats=True)
        setup.compiled = variant.mode


def training_step(setup: Setup, arch: str, args: argparse.Namespace, device: Any, working_copies: bool = True,
                  mode: str = "default") -> tuple[Callable[[], Any], Callable[[], None]]:
    """One optimizer step through the trainer's ``DiffusionStep`` (noise, timesteps, ``predict``, loss) on a cached
    batch, and the same forward pass without gradients."""
    from types import SimpleNamespace

    import torch

    from toolkit.models.memory import uses_cuda_graphs
    from toolkit.train.step import DiffusionStep
    from toolkit.train.noise import Objective

    graphed = uses_cuda_graphs(mode, device)
    autocast = compute_dtype(args) == torch.bfloat16
    working = setup.working if working_copies else None
    latents, cond, info = conditioning(arch, args, device, compute_dtype(args))
    batch = SimpleNamespace(latents=latents, pixels=None, cond=cond, captions=[], image_info=info, reference_latents=None,
                            reference_pixels=None)
    diffusion = DiffusionStep(setup.adapter, setup.network, Objective(schedule(arch), timestep_type="sigmoid"), loss_type="mse",
                              huber_c=0.1, train_text_encoder=False, generator=torch.Generator().manual_seed(2),
                              cast_inputs=not autocast or args.cast_inputs)

    def step() -> Any:
        if graphed:  # as the trainer does with train.compile_mode: reduce-overhead
            torch.compiler.cudagraph_mark_step_begin()
        with working.active() if working is not None else nullcontext():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = diffusion(batch)
            loss.backward()
        if working is not None:  # as the trainer clips and steps with working copies
            working.step(setup.optimizer, 1.0)
            return loss.detach()
        torch.nn.utils.clip_grad_norm_(setup.params, 1.0)
        setup.optimizer.step()
        setup.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            diffusion(batch)

    return step, forward


def count_flops(function: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def model_flops(setup: Setup, arch: str, args: argparse.Namespace, device: Any) -> float:
    """FLOPs of one training step without recomputation, counted eagerly before any compilation: with every
    block checkpointed the recomputation is exactly one forward pass, which is subtracted."""
    step, forward = training_step(setup, arch, args, device)
    setup.model.enable_gradient_checkpointing()
    return count_flops(step) - count_flops(forward)


def measure(setup: Setup, case: Case, variant: Variant, args: argparse.Namespace, device: Any, flops: float | None) -> Result:
    result = Result(case, variant, load_peak=setup.load_peak, flops=flops, note=setup.note)
    apply_variant(setup, variant)
    step, _ = training_step(setup, case.arch, args, device, variant.working_copies, variant.mode if variant.compile else "default")
    for _ in range(args.warmup):
        step()
    synchronize(device)
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
    events = prof.events()
    fused = sum(1 for event in events if GENERATED.match(event.name))
    total, outside, regions = launching(events), launching(events, outside_compiled=True), compiled_regions(events)
    print(f"operator calls per step: {sum(calls.values())} aten ops, {total} kernel launches "
          f"({fused} of them compiled, fused kernels), {calls.get('aten::_to_copy', 0)} aten::_to_copy, "
          f"{calls.get('aten::mm', 0)} aten::mm", flush=True)
    if regions:
        # with CUDA graphs (train.compile_mode: reduce-overhead) a compiled region's launches become one graph replay
        print(f"compiled regions: {regions} calls holding {total - outside} of the launches; {outside} launches outside "
              f"them, so about {outside + regions} launches per step with CUDA graphs", flush=True)
        common = ", ".join(f"{name} {count}" for name, count in outside_launches(events).most_common(12))
        print(f"launches outside compiled regions, by operator: {common}", flush=True)
        total_ops, left = dispatches(events), dispatches(events, outside_compiled=True)
        common = ", ".join(f"{name} {count}" for name, count in left.most_common(8))
        print(f"host dispatches (outermost aten ops, views and allocations included): {sum(total_ops.values())} per step, "
              f"{sum(left.values())} outside compiled regions (what CUDA graphs leave to the CPU): {common}", flush=True)


NO_KERNEL = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "view_as", "as_strided", "reshape", "_reshape_alias", "transpose", "t", "permute", "expand",
    "expand_as", "slice", "narrow", "select", "unsqueeze", "squeeze", "detach", "alias", "unflatten", "flatten", "split",
    "split_with_sizes", "chunk", "unbind", "empty", "empty_like", "empty_strided", "_has_compatible_shallow_copy_type",
    "lift_fresh", "item", "_local_scalar_dense", "is_nonzero", "result_type", "resolve_conj", "resolve_neg", "set_",
    "contiguous", "to", "numpy_T", "_nested_tensor_from_mask_left_aligned"))


GENERATED = re.compile(r"graph_\d+_cpp_fused_|triton_")
"""Kernels inductor generated (``train.compile``): C++ ones on the CPU, named in the profile when
``torch._inductor.config.cpp.enable_kernel_profile`` is on (``--profile`` sets it), Triton ones on a GPU."""


COMPILED_REGION = ("CompiledFunction", "CompiledFunctionBackward")
"""Profiler events around a compiled graph's forward and backward (AOT autograd)."""


def compiled_regions(events: Any) -> int:
    """Calls of compiled graphs, forward and backward, outermost only."""
    return sum(1 for event in events if event.name in COMPILED_REGION and not _inside_compiled(event.cpu_parent))


def _inside_compiled(event: Any) -> bool:
    while event is not None:
        if event.name in COMPILED_REGION:
            return True
        event = event.cpu_parent
    return False


def dispatches(events: Any, outside_compiled: bool = False) -> Counter[str]:
    """Outermost aten calls (none of their callers is an aten op) by name: each is one trip through the dispatcher, the
    host's cost per operator whether it launches a kernel or not; with ``outside_compiled`` only those no compiled graph
    runs."""
    def outermost(event: Any) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    return Counter(event.name for event in events if event.name.startswith("aten::") and outermost(event)
                   and not (outside_compiled and _inside_compiled(event)))


def outside_launches(events: Any) -> Counter[str]:
    """The launching operators no compiled graph runs, counted by name (what is left to compile or fuse)."""
    return Counter(event.name for event in events if _launches(event) and not _inside_compiled(event))


MULTI_TENSOR = re.compile(r"aten::_(foreach|fused)_")
"""Operators over a list of tensors (the optimizer's step, gradient clipping): on the CPU they run one operator per
tensor, on a GPU one multi-tensor kernel per chunk of tensors, so each counts as one launch and its children as none
(SDXL's 1,444 LoRA tensors would otherwise count 2,888 launches that a GPU step does not make)."""


def _launches(event: Any) -> bool:
    if GENERATED.match(event.name):
        return True
    parent = event.cpu_parent
    while parent is not None:
        if MULTI_TENSOR.match(parent.name):
            return False
        parent = parent.cpu_parent
    if MULTI_TENSOR.match(event.name):
        return True
    return (event.name.startswith("aten::") and event.name not in NO_KERNEL
            and not any(child.name.startswith("aten::") for child in event.cpu_children))


def launching(events: Any, outside_compiled: bool = False) -> int:
    """Operators that launch a kernel on a GPU: innermost aten calls (a composite op such as ``linear`` only
    calls others) that are not views, metadata or allocations, and the kernels compiled blocks run instead;
    with ``outside_compiled`` only those no compiled graph runs."""
    return sum(1 for event in events if _launches(event) and not (outside_compiled and _inside_compiled(event)))


def run_case(case: Case, args: argparse.Namespace, device: Any, flops: dict[str, float]) -> Iterator[Result]:
    """A configuration's variants on one model, errors (out of memory included) reported instead of raised."""
    reset_memory(device)
    setup = attempt(device, prepare, case, args, device)
    if isinstance(setup, str):
        yield from (Result(case, variant, note=setup) for variant in case.variants)
        return
    if case.qtype is None and case.arch not in flops:
        counted = attempt(device, model_flops, setup, case.arch, args, device)
        if isinstance(counted, float):
            flops[case.arch] = counted
    for variant in case.variants:
        outcome = attempt(device, measure, setup, case, variant, args, device, flops.get(case.arch))
        yield outcome if isinstance(outcome, Result) else Result(case, variant, note=outcome)
    del setup
    reset_memory(device)


def attempt(device: Any, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, or the one-line note of its error (out of memory included) after printing the traceback."""
    import torch

    try:
        return function(*args)
    except torch.cuda.OutOfMemoryError:
        return f"out of memory (peak {peak_gib(device) or 0:.1f} GiB)"
    except Exception as err:  # noqa: BLE001 - report and go on with the next configuration
        traceback.print_exc()
        return f"error: {type(err).__name__}: {str(err).splitlines()[0][:120]}"


def describe(variant: Variant, args: argparse.Namespace) -> str:
    """The trainer's settings of a row: weight precision, checkpointing, compilation."""
    import torch

    weights = ("fp32" if compute_dtype(args) == torch.float32 else "bf16 adapters" if args.adapter_dtype == "bf16"
               else "working copies" if variant.working_copies else "autocast casts")
    checkpointing = {0: "no ckpt", 1: "ckpt"}.get(variant.interval, f"ckpt 1 in {variant.interval}")
    compiled = ["compiled, CUDA graphs" if variant.mode == "reduce-overhead" else "compiled"] if variant.compile else []
    return ", ".join([weights, checkpointing] + compiled)


def row(result: Result, args: argparse.Namespace, peak: float | None) -> list[str]:
    case = result.case
    label = DENOISERS[case.arch][0]
    name = label if not (args.tiny or args.narrow) else f"{label.rsplit(' ', 1)[0]} ({'tiny' if args.tiny else 'narrow'})"
    rank = args.rank or default_rank(case.arch)
    gib = (lambda v: f"{v:.2f}" if v is not None else "n/a")
    tflop = f"{result.flops / 1e12:.3g}" if result.flops else "n/a"
    mfu = (f"{100 * result.flops / result.seconds / (peak * 1e12):.1f}%"
           if result.flops and result.seconds and peak else "n/a")
    seconds = f"{result.seconds:.3f}" if result.seconds is not None else "-"
    return [name, case.label, describe(result.variant, args), f"{args.resolution}", f"{rank}", seconds, gib(result.peak),
            gib(result.load_peak), tflop, mfu, result.note]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from toolkit.devices import resolve_device
    from toolkit.log import setup_console

    setup_console()
    args.resolution = args.resolution or (64 if args.tiny else 1024)
    device = resolve_device(args.device)
    args.device_type = device.type
    if args.compile_backend != "inductor":
        from toolkit.models import memory

        memory.COMPILE_BACKEND = args.compile_backend
    if args.profile:  # name inductor's C++ kernels in the profile, so compiled steps' launches can be counted
        import torch._inductor.config

        torch._inductor.config.cpp.enable_kernel_profile = True
    peak = peak_tflops(device, args.peak_tflops)
    print(f"device: {device_text(device)}; peak bf16 {peak or 'unknown'} TFLOP/s; {str(compute_dtype(args))[6:]}, "
          f"batch {args.batch}, {args.optimizer}{' per tensor' if args.per_tensor_optimizer else ''}, {args.steps} timed steps after {args.warmup} warm-up")
    flops: dict[str, float] = {}
    rows, results = [], []
    for case in cases(args):
        for result in run_case(case, args, device, flops):
            results.append(result)
            rows.append(row(result, args, peak))
            print("  " + " | ".join(rows[-1]), flush=True)
    header = ["model", "base", "trainer", "res", "rank", "s/step", "peak GiB", "load peak GiB", "TFLOP/step", "MFU", "notes"]
    print(f"\n{markdown_table(header, rows)}\n")
    finish("gpu_train.py", argv if argv is not None else sys.argv[1:], device, lambda: records(results, rows, args),
           args.results, args.no_results)
    return 0


def records(results: list[Result], rows: list[list[str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The results file's records (``bench/results.py``); each is compared with the same run's first eager bf16 row
    of its architecture (every block checkpointed, not compiled), as the docs' tables are."""
    found = []
    for result, cells in zip(results, rows):
        variant = result.variant
        found.append({
            "case": ", ".join(cells[:3]), "arch": result.case.arch, "base": result.case.label, "trainer": cells[2],
            "eager_bf16": result.case.qtype is None and not variant.compile and variant.interval == 1,
            "resolution": args.resolution, "rank": int(cells[4]), "batch": args.batch, "optimizer": args.optimizer,
            "flat_optimizer": not args.per_tensor_optimizer,
            "s_per_step": result.seconds, metric(result.case.arch, args.resolution, "s_per_step"): result.seconds,
            "peak_gib": result.peak, "load_peak_gib": result.load_peak,
            "tflop_per_step": result.flops / 1e12 if result.flops else None, "mfu": cells[9], "note": result.note})
    return with_baselines(found, "s_per_step", lambda record: record["eager_bf16"])


if __name__ == "__main__":
    sys.exit(main())
