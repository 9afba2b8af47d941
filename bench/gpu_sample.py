"""Z-Image-Turbo generation time and peak memory: 8 steps at 1024x1024 with full-size random-weight models.

Run (GPU):  python bench/gpu_sample.py                       # bf16
            python bench/gpu_sample.py --quantize qint8      # 8-bit transformer (and --quantize-te qint8 for the encoder)
            python bench/gpu_sample.py --low-vram            # transformer parked in CPU memory until first use
Run (CPU, to check it works): python bench/gpu_sample.py --tiny

The pipeline is diffusers' ZImagePipeline built from the real configs (bench/fullsize.py): the 6B transformer,
the FLUX VAE and a Qwen3-4B text encoder with the real layer sizes, all with random weights. The encoder's
vocabulary is the offline test tokenizer's (a few thousand entries instead of 151936), so only its embedding
table is smaller; every layer runs as in the real model. It is wrapped in easel's ``ZImageAdapter``
(``PipelineAdapter.from_pipe``, the same placement as ``load``: quantization, ``low_vram``) and images are made
by ``adapter.generate``, exactly what ``job: generate`` and training previews call.

Printed: seconds per image (median of ``--runs`` after one warm-up), the time in the text encoder, the
transformer (all steps) and the VAE decoder (CUDA events around their forwards), and peak allocated memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import (  # noqa: E402
    FLUX_VAE, FLUX_VAE_TINY, QWEN3_4B, QWEN3_TINY, ROOT, ZIMAGE_TRANSFORMER, ZIMAGE_TRANSFORMER_TINY, build, device_text,
    markdown_table, peak_gib, reset_memory, synchronize)
from results import metric, target_folder, write  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, help="image side (default 1024; 64 with --tiny)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="timed images (after one warm-up image)")
    parser.add_argument("--quantize", help="transformer quantization type (qint8, int8, float8, ...)")
    parser.add_argument("--quantize-te", help="text encoder quantization type")
    parser.add_argument("--low-vram", action="store_true", help="model.low_vram: transformer parked until first use")
    parser.add_argument("--tiny", action="store_true", help="tiny models (for a CPU check that the script works)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (as train.compile does)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", metavar="DIR", help="append the figures to DIR/<date>-<device>.json (default on a GPU: bench/results)")
    parser.add_argument("--no-results", action="store_true", help="write no results file")
    return parser.parse_args(argv)


def pipeline(tiny: bool, dtype: Any) -> Any:
    """ZImagePipeline with random weights, built in CPU memory (the adapter places it)."""
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


def adapter_for(pipe: Any, args: argparse.Namespace, device: Any, dtype: Any) -> Any:
    from extensions.z_image.adapter import ZImageAdapter
    from toolkit.config.blocks import ModelConfig
    from toolkit.registry import Registry

    registry = Registry.discover(("jobs",), ROOT / "extensions")
    config = ModelConfig(name_or_path="bench:random-weights", arch="zimage:turbo", quantize=bool(args.quantize),
                         qtype=args.quantize or "qint8", quantize_te=bool(args.quantize_te), qtype_te=args.quantize_te or "qint8",
                         low_vram=args.low_vram)
    return ZImageAdapter.from_pipe(pipe, config, registry.arch(config.arch), device=device, dtype=dtype)


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

    setup_console()
    device = resolve_device(args.device)
    resolution = args.resolution or (64 if args.tiny else 1024)
    dtype = torch.bfloat16
    reset_memory(device)
    adapter = adapter_for(pipeline(args.tiny, dtype), args, device, dtype)
    load_peak = peak_gib(device)
    if args.compile:
        from toolkit.models.memory import compile_blocks

        compile_blocks(adapter.compile_units())  # the warm-up image below compiles them
    timers = {"text encoder": PhaseTimer(adapter.text_encoders["text_encoder"], device),
              "transformer": PhaseTimer(adapter.denoiser, device), "VAE decoder": PhaseTimer(adapter.vae.decoder, device)}
    request = GenerateRequest(prompt="a watercolor painting of a lighthouse at dusk", width=resolution, height=resolution,
                              steps=args.steps, guidance_scale=1.0, seed=0, sampler="flowmatch")
    adapter.generate([request])
    for timer in timers.values():
        timer.take()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, phases = [], {name: [] for name in timers}
    for _ in range(args.runs):
        synchronize(device)
        start = time.perf_counter()
        adapter.generate([request])
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        for name, timer in timers.items():
            phases[name].append(timer.take())
    peak = peak_gib(device)
    setup = (f"{'tiny' if args.tiny else 'full-size'} Z-Image-Turbo, bf16, transformer {args.quantize or 'bf16'}, "
             f"text encoder {args.quantize_te or 'bf16'}{', low_vram' if args.low_vram else ''}{', compiled' if args.compile else ''}")
    print(f"device: {device_text(device)}\n{setup}; {args.steps} steps at {resolution}x{resolution}, guidance 1 (no CFG)")
    gib = (lambda v: f"{v:.2f}" if v is not None else "n/a")
    row = [setup, f"{resolution}", f"{args.steps}", f"{statistics.median(seconds):.3f}",
           *(f"{statistics.median(phases[name]):.3f}" for name in timers), gib(peak), gib(load_peak)]
    header = ["setup", "res", "steps", "s/image", *(f"{name} s" for name in timers), "peak GiB", "load peak GiB"]
    print(f"\n{markdown_table(header, [row])}\n")
    given = argv if argv is not None else sys.argv[1:]
    folder = target_folder(args.results, args.no_results, device)
    if folder is not None:
        median = statistics.median(seconds)
        record = {"case": setup, "arch": "zimage_turbo", "resolution": resolution, "steps": args.steps, "s_per_image": median,
                  "peak_gib": peak, "load_peak_gib": load_peak, "baseline": None,
                  **{f"{name.replace(' ', '_')}_s": statistics.median(phases[name]) for name in timers}}
        if args.steps == 8:  # the goal's figure is for Turbo's 8 steps
            record[metric("zimage_turbo", resolution, "s_per_image")] = median
        print(f"results: {write('gpu_sample.py', given, device, [record], folder)}")
    print("rerun: python bench/gpu_sample.py " + " ".join(given))
    return 0


if __name__ == "__main__":
    sys.exit(main())
