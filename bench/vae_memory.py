"""What VAE tiling (``model.vae_tiling``) saves: memory and time of encoding and decoding one image, whole and tiled.

Run (GPU):  python bench/vae_memory.py                        # the FLUX.1 VAE (Z-Image, FLUX.1) at 1024, bf16
            python bench/vae_memory.py --arch sdxl --resolution 2048
Run (CPU):  python bench/vae_memory.py --resolution 512 --tiles 0,256   # fp32; about 20 s per decode (2 cores)
            python bench/vae_memory.py --tiny                          # a check that the script works

The VAE is the real config's (bench/fullsize.py) with random weights. Tiles are set by easel's own
``toolkit.models.vae_tiling.enable``, the code ``model.vae_tiling`` runs. Each setting encodes a random image and
decodes random latents once to warm up, then ``--runs`` times timed. Its memory is the peak above what was held
before the call: on a GPU, ``torch.cuda.max_memory_allocated``; on the CPU, the process's peak resident memory
(``VmHWM``, reset through ``/proc/self/clear_refs`` before each call). The ratios are over the whole image's figures
from the same run. "differs" is the mean absolute difference of the tiled decode from the whole one, as a share of
the whole image's standard deviation: with random weights it shows that the tiles are blended, not how a trained
VAE's seams look.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import FLUX_VAE, FLUX_VAE_TINY, SDXL_VAE, SDXL_VAE_TINY, build, device_text, markdown_table, synchronize  # noqa: E402
from results import finish  # noqa: E402

VAES = {"zimage": ("FLUX.1 VAE", FLUX_VAE, FLUX_VAE_TINY), "sdxl": ("SDXL VAE", SDXL_VAE, SDXL_VAE_TINY)}
"""--arch -> the VAE's name, its full config and a tiny one."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=list(VAES), default="zimage", help="whose VAE: zimage (the FLUX.1 VAE) or sdxl")
    parser.add_argument("--resolution", type=int, help="image side in pixels (default 1024; 128 with --tiny)")
    parser.add_argument("--tiles", help="tile sizes to compare, 0 = the whole image, first = the baseline "
                        "(default 0,512,256; 0,64,32 with --tiny)")
    parser.add_argument("--runs", type=int, default=2, help="timed calls per setting (after one warm-up)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="default: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--tiny", action="store_true", help="a tiny VAE (a CPU check that the script works)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", metavar="DIR", help="append the figures to DIR/<date>-<device>.json (default on a GPU: bench/results)")
    parser.add_argument("--no-results", action="store_true", help="write no results file")
    return parser.parse_args(argv)


class PeakMemory:
    """Bytes a call adds at its peak over what was held before it (CUDA allocator, or the process's resident set)."""

    def __init__(self, device: Any):
        self.device = device

    def measure(self, call: Callable[[], Any]) -> tuple[Any, float]:
        """``call()``'s result and its peak in GiB above the memory held when it started."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            held = torch.cuda.memory_allocated(self.device)
            result = call()
            torch.cuda.synchronize(self.device)
            return result, (torch.cuda.max_memory_allocated(self.device) - held) / 2 ** 30
        Path("/proc/self/clear_refs").write_text("5")  # restarts VmHWM at the current resident size
        held = _status_kib("VmRSS")
        result = call()
        return result, (_status_kib("VmHWM") - held) / 2 ** 20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def timed(call: Callable[[], Any], runs: int, device: Any) -> float:
    """Median seconds of ``runs`` calls."""
    seconds = []
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure_setting(vae: Any, tile: int, pixels: Any, latents: Any, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """One tile size (0: whole): each direction's peak and time, and the decoded image."""
    import torch

    from toolkit.models import vae_tiling

    if tile:
        vae_tiling.enable(vae, tile)
    else:
        vae.use_tiling = False
    memory = PeakMemory(device)
    with torch.no_grad():
        encode = (lambda: vae.encode(pixels).latent_dist.mode())
        decode = (lambda: vae.decode(latents).sample)
        _, encode_peak = memory.measure(encode)
        image, decode_peak = memory.measure(decode)
        return {"tile": tile, "encode_peak_gib": encode_peak, "decode_peak_gib": decode_peak,
                "encode_s": timed(encode, args.runs, device), "decode_s": timed(decode, args.runs, device), "image": image.float()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from toolkit.devices import resolve_device, resolve_dtype
    from toolkit.log import setup_console

    setup_console()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype or ("bf16" if device.type == "cuda" else "fp32"))
    resolution = args.resolution or (128 if args.tiny else 1024)
    tiles = [int(tile) for tile in (args.tiles or ("0,64,32" if args.tiny else "0,512,256")).split(",")]
    name, full, tiny = VAES[args.arch]
    from diffusers import AutoencoderKL

    vae = build(AutoencoderKL, tiny if args.tiny else full, device, dtype, seed=1).eval()
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(1, 3, resolution, resolution, generator=generator) * 2 - 1).to(device, dtype)
    latents = torch.randn(1, vae.config.latent_channels, resolution // 8, resolution // 8, generator=generator).to(device, dtype)
    with torch.no_grad():  # warm-up: kernels chosen, allocator grown to its working size
        vae.decode(latents[..., :8, :8])
    settings = [measure_setting(vae, tile, pixels, latents, args, device) for tile in tiles]
    base = settings[0]
    rows, records = [], []
    for setting in settings:
        differs = (setting["image"] - base["image"]).abs().mean() / base["image"].std()
        ratio = (lambda key: setting[key] / base[key] if base[key] > 0 else float("nan"))
        label = f"tiles of {setting['tile']} px" if setting["tile"] else "whole image"
        rows.append([label, f"{setting['decode_peak_gib']:.2f}", f"{ratio('decode_peak_gib'):.2f}", f"{setting['decode_s']:.3f}",
                     f"{ratio('decode_s'):.2f}", f"{setting['encode_peak_gib']:.2f}", f"{ratio('encode_peak_gib'):.2f}",
                     f"{setting['encode_s']:.3f}", f"{100 * float(differs):.1f}%"])
        records.append({"case": f"{name} {label}", "arch": f"{args.arch}_vae", "resolution": resolution, "tile": setting["tile"],
                        **{key: setting[key] for key in ("encode_peak_gib", "decode_peak_gib", "encode_s", "decode_s")},
                        "peak_gib": max(setting["encode_peak_gib"], setting["decode_peak_gib"]),
                        "baseline": None if setting is base else {"case": f"{name} whole image",
                                                                   "decode_peak_gib": base["decode_peak_gib"],
                                                                   "ratio": round(ratio("decode_peak_gib"), 4)}})
    print(f"device: {device_text(device)}\n{'tiny' if args.tiny else 'full-size'} {name}, {str(dtype).removeprefix('torch.')}, "
          f"{resolution}x{resolution}, one image; peaks are above the memory held before each call")
    header = ["setup", "decode peak GiB", "x whole", "decode s", "x whole", "encode peak GiB", "x whole", "encode s", "differs"]
    print(f"\n{markdown_table(header, rows)}\n")
    finish("vae_memory.py", argv if argv is not None else sys.argv[1:], device, lambda: records, args.results, args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
