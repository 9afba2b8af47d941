"""Generation time and peak memory with full-size random-weight models: Z-Image-Turbo 8 steps, SDXL 30 steps (1024x1024).

Run (GPU):  python bench/gpu_sample.py                       # Z-Image-Turbo, bf16
            python bench/gpu_sample.py --quantize qint8      # 8-bit transformer (and --quantize-te qint8 for the encoder)
            python bench/gpu_sample.py --low-vram            # transformer parked in CPU memory until first use
            python bench/gpu_sample.py --offload-te          # the text encoder's layers streamed from CPU memory while it encodes
            python bench/gpu_sample.py --vae-tiling 512      # the VAE decodes 512 px tiles (model.vae_tiling)
            python bench/gpu_sample.py --remember-prompts    # the prompt's encoding kept, as the generate job keeps it
            python bench/gpu_sample.py --arch sdxl --compile # SDXL base, 30 steps, CFG 5
Run (CPU, to check it works): python bench/gpu_sample.py --tiny  (and --arch sdxl --tiny)

The pipelines are diffusers' ZImagePipeline and StableDiffusionXLPipeline built from the real configs
(bench/fullsize.py) with random weights: Z-Image's 6B transformer, the FLUX VAE and a Qwen3-4B text encoder; SDXL's
UNet, its VAE, CLIP ViT-L and OpenCLIP ViT-bigG. The encoders' vocabulary is the offline test tokenizer's (a few
thousand entries instead of 151936 / 49408), so only their embedding tables are smaller; every layer runs as in the
real model. Each is wrapped in easel's adapter (``PipelineAdapter.from_pipe``, the same placement as ``load``:
quantization, ``low_vram``) and images are made by ``adapter.generate``, exactly what ``job: generate`` and training
previews call.

Printed: seconds per image (median of ``--runs`` after one warm-up), the time in the text encoders, the denoiser
(all steps) and the VAE decoder (CUDA events around their forwards), and peak allocated memory.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import (  # noqa: E402
    CLIP_G, CLIP_L, CLIP_TINY, FLUX_VAE, FLUX_VAE_TINY, QWEN3_4B, QWEN3_TINY, ROOT, SDXL_UNET, SDXL_UNET_TINY, SDXL_VAE,
    SDXL_VAE_TINY, ZIMAGE_TRANSFORMER, ZIMAGE_TRANSFORMER_TINY, build, device_text, markdown_table, peak_gib, reset_memory,
    synchronize)
from results import finish, metric  # noqa: E402


@dataclass(frozen=True)
class Case:
    """What one architecture's benchmark makes: its label, easel arch, adapter, and the goal's sampling settings."""

    label: str
    arch: str
    adapter: str
    steps: int
    guidance: float
    sampler: str


CASES = {
    "zimage_turbo": Case("Z-Image-Turbo", "zimage:turbo", "extensions.z_image.adapter:ZImageAdapter", 8, 1.0, "flowmatch"),
    "sdxl": Case("SDXL", "sdxl", "extensions.sdxl.adapter:SDXLAdapter", 30, 5.0, "euler"),
}
"""--arch -> its case; the goals' figures are at these step counts (Turbo's 8 without CFG, SDXL's 30 with CFG)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, help="image side (default 1024; 64 with --tiny)")
    parser.add_argument("--arch", choices=list(CASES), default="zimage_turbo")
    parser.add_argument("--steps", type=int, help="sampling steps (default: 8 for Z-Image-Turbo, 30 for SDXL)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: 1 for Z-Image-Turbo, 5 for SDXL: CFG)")
    parser.add_argument("--runs", type=int, default=3, help="timed images (after one warm-up image)")
    parser.add_argument("--quantize", help="denoiser quantization type (qint8, int8, float8, float8_mm, ...)")
    parser.add_argument("--quantize-te", help="text encoders' quantization type")
    parser.add_argument("--low-vram", action="store_true", help="model.low_vram: denoiser parked until first use")
    parser.add_argument("--offload-te", action="store_true",
                        help="model.layer_offloading for the text encoders only: their layers streamed from CPU memory while they encode")
    parser.add_argument("--vae-tiling", type=int, metavar="PX", help="model.vae_tiling with tiles of PX pixels (e.g. 512)")
    parser.add_argument("--remember-prompts", action="store_true",
                        help="the generate job's encoder memo: the repeated prompt is encoded once (not the goal's figure)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (for a CPU check that the script works)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser's blocks (as generate.compile does)")
    parser.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                        help="with --compile: torch.compile's mode (generate.compile_mode; reduce-overhead replays CUDA graphs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", metavar="DIR", help="append the figures to DIR/<date>-<device>.json (default on a GPU: bench/results)")
    parser.add_argument("--no-results", action="store_true", help="write no results file")
    return parser.parse_args(argv)


def pipeline(arch: str, tiny: bool, dtype: Any) -> Any:
    """The architecture's diffusers pipeline with random weights, built in CPU memory (the adapter places it)."""
    return sdxl_pipeline(tiny, dtype) if arch == "sdxl" else zimage_pipeline(tiny, dtype)


def zimage_pipeline(tiny: bool, dtype: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from toolkit.testing.tiny import qwen_tokenizer

    tokenizer = qwen_tokenizer()
    text = dict(QWEN3_TINY if tiny else QWEN3_4B)
    text_config = Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                              **text)
    cpu = torch.device("cpu")
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, use_dynamic_shifting=False, shift=3.0),
        vae=build(AutoencoderKL, FLUX_VAE_TINY if tiny else FLUX_VAE, cpu, dtype, seed=1),
        text_encoder=build(lambda **kw: Qwen3Model(Qwen3Config(**kw)), text_config.to_dict(), cpu, dtype, seed=2),
        tokenizer=tokenizer,
        transformer=build(ZImageTransformer2DModel, ZIMAGE_TRANSFORMER_TINY if tiny else ZIMAGE_TRANSFORMER, cpu, dtype, seed=3),
    )


def sdxl_pipeline(tiny: bool, dtype: Any) -> Any:
    """SDXL base: the real UNet, VAE and both CLIP encoders' layer sizes; the scheduler is SDXL's (scaled-linear)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from toolkit.testing.tiny import clip_tokenizer

    tokenizer = clip_tokenizer()
    cpu = torch.device("cpu")
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}

    def encoder(cls: Any, layers: dict[str, Any], seed: int) -> Any:
        return build(lambda **kw: cls(CLIPTextConfig(**kw)), {**layers, **ids}, cpu, dtype, seed=seed)

    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return StableDiffusionXLPipeline(
        vae=build(AutoencoderKL, SDXL_VAE_TINY if tiny else SDXL_VAE, cpu, dtype, seed=1),
        text_encoder=encoder(CLIPTextModel, CLIP_TINY if tiny else CLIP_L, 2), tokenizer=tokenizer,
        text_encoder_2=encoder(CLIPTextModelWithProjection, CLIP_TINY if tiny else CLIP_G, 3), tokenizer_2=tokenizer,
        unet=build(UNet2DConditionModel, SDXL_UNET_TINY if tiny else SDXL_UNET, cpu, dtype, seed=4),
        scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )


def adapter_for(pipe: Any, case: Case, args: argparse.Namespace, device: Any, dtype: Any) -> Any:
    import importlib

    from toolkit.config.blocks import ModelConfig
    from toolkit.registry import Registry

    registry = Registry.discover(("jobs",), ROOT / "extensions")
    config = ModelConfig(name_or_path="bench:random-weights", arch=case.arch, quantize=bool(args.quantize),
                         qtype=args.quantize or "qint8", quantize_te=bool(args.quantize_te), qtype_te=args.quantize_te or "qint8",
                         low_vram=args.low_vram, layer_offloading=args.offload_te, layer_offloading_fraction=0.0,
                         layer_offloading_text_encoder_fraction=1.0, vae_tiling=bool(args.vae_tiling),
                         vae_tile_size=args.vae_tiling or 512)
    module, _, name = case.adapter.partition(":")
    adapter_class = getattr(importlib.import_module(module), name)
    return adapter_class.from_pipe(pipe, config, registry.arch(config.arch), device=device, dtype=dtype)


class PhaseTimer:
    """Time spent in a module's forwards (CUDA events, no synchronisation inside the run; wall time on the CPU)."""

    def __init__(self, module: Any, device: Any):
        import torch

        self.cuda = device.type == "cuda"
        self.spans: list[Any] = []
        self._start: Any = None
        make = (lambda: torch.cuda.Event(enable_timing=True)) if self.cuda else time.perf_counter

        def before(*_: Any) -> None:
            self._start = make()
            if self.cuda:
                self._start.record()

        def after(*_: Any) -> None:
            end = make()
            if self.cuda:
                end.record()
            self.spans.append((self._start, end))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def take(self) -> float:
        """Seconds recorded since the last call."""
        total = sum(start.elapsed_time(end) / 1000 if self.cuda else end - start for start, end in self.spans)
        self.spans = []
        return total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from toolkit.devices import resolve_device
    from toolkit.log import setup_console
    from toolkit.models.base import GenerateRequest
    from toolkit.models.encoder_memo import EncoderMemo

    setup_console()
    case = CASES[args.arch]
    device = resolve_device(args.device)
    resolution = args.resolution or (64 if args.tiny else 1024)
    steps = args.steps or case.steps
    guidance = case.guidance if args.guidance is None else args.guidance
    dtype = torch.bfloat16
    reset_memory(device)
    adapter = adapter_for(pipeline(args.arch, args.tiny, dtype), case, args, device, dtype)
    load_peak = peak_gib(device)
    if args.compile:
        from toolkit.models.memory import compile_blocks, mark_graph_steps, uses_cuda_graphs

        compile_blocks(adapter.compile_units(), mode=args.compile_mode)  # the warm-up image below compiles them
        if uses_cuda_graphs(args.compile_mode, device):  # as the generate job does
            mark_graph_steps(adapter.denoiser)
    timers = {"text encoders": [PhaseTimer(encoder, device) for encoder in adapter.text_encoders.values()],
              "denoiser": [PhaseTimer(adapter.denoiser, device)], "VAE decoder": [PhaseTimer(adapter.vae.decoder, device)]}
    request = GenerateRequest(prompt="a watercolor painting of a lighthouse at dusk", width=resolution, height=resolution,
                              steps=steps, guidance_scale=guidance, seed=0, sampler=case.sampler,
                              negative_prompt="blurry" if guidance > 1 else "")
    memo = EncoderMemo(adapter, parked=[]) if args.remember_prompts else None
    with memo.round() if memo else nullcontext():  # the warm-up image encodes the prompt, the timed ones reuse it
        adapter.generate([request])
        taken = (lambda name: sum(timer.take() for timer in timers[name]))
        for name in timers:
            taken(name)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, phases = [], {name: [] for name in timers}
        for _ in range(args.runs):
            synchronize(device)
            start = time.perf_counter()
            adapter.generate([request])
            synchronize(device)
            seconds.append(time.perf_counter() - start)
            for name in timers:
                phases[name].append(taken(name))
    peak = peak_gib(device)
    denoiser = "transformer" if args.arch == "zimage_turbo" else "UNet"
    setup = (f"{'tiny' if args.tiny else 'full-size'} {case.label}, bf16, {denoiser} {args.quantize or 'bf16'}, "
             f"text encoder {args.quantize_te or 'bf16'}{', streamed' if args.offload_te else ''}{', low_vram' if args.low_vram else ''}{f', VAE tiles {args.vae_tiling}' if args.vae_tiling else ''}{', compiled' if args.compile else ''}{', prompt remembered' if memo else ''}"
             f"{f' ({args.compile_mode})' if args.compile and args.compile_mode != 'default' else ''}")
    print(f"device: {device_text(device)}\n{setup}; {steps} steps at {resolution}x{resolution}, "
          f"guidance {guidance:g} ({'CFG' if guidance > 1 else 'no CFG'})")
    gib = (lambda v: f"{v:.2f}" if v is not None else "n/a")
    row = [setup, f"{resolution}", f"{steps}", f"{statistics.median(seconds):.3f}",
           *(f"{statistics.median(phases[name]):.3f}" for name in timers), gib(peak), gib(load_peak)]
    header = ["setup", "res", "steps", "s/image", *(f"{name} s" for name in timers), "peak GiB", "load peak GiB"]
    print(f"\n{markdown_table(header, [row])}\n")
    median = statistics.median(seconds)
    record = {"case": setup, "arch": args.arch, "resolution": resolution, "steps": steps, "guidance": guidance,
              "s_per_image": median, "peak_gib": peak, "load_peak_gib": load_peak, "baseline": None,
              **{f"{name.replace(' ', '_')}_s": statistics.median(phases[name]) for name in timers}}
    if steps == case.steps and guidance == case.guidance and not memo:  # the goal's figure: its settings, a new prompt
        record[metric(args.arch, resolution, "s_per_image")] = median
    finish("gpu_sample.py", argv if argv is not None else sys.argv[1:], device, lambda: [record], args.results, args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
