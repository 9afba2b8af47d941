"""easel's trainer against diffusers' own example LoRA trainers, side by side in one run, on the same random-weight model.

Run (GPU): python bench/peers.py --diffusers ~/diffusers                  # SDXL and Z-Image at 1024
           python bench/peers.py --diffusers ~/diffusers --only zimage --steps 30 --peer-args=--offload

``--diffusers`` is a checkout of huggingface/diffusers (the scripts are ``examples/dreambooth/
train_dreambooth_lora_sdxl.py`` and ``train_dreambooth_lora_z_image.py``; they need torchvision). Nothing is
downloaded: the full-size model is built with random weights (bench/fullsize.py) and written once as a diffusers
folder under ``--work``, with a folder of random 1024 px images. Both trainers then train on them with the same
settings: resolution, LoRA rank = alpha on the attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``: the
scripts' default layers), batch 1, AdamW (or ``--optimizer adamw8bit``: their ``--use_8bit_adam``), lr 1e-4, bf16,
gradient checkpointing, one caption (both encode it once); Z-Image with cached latents (their
``--cache_latents``), SDXL encoding each batch with the bf16 VAE (their script has no latent cache). SDXL's text
encoders have the real widths but 2 layers (their output is computed once on both sides).

Each trainer runs in its own process under bench/peer_runner.py, which notes when each optimizer step ends and the
peak GPU memory after the first step. Printed: median s/step after ``--warmup`` steps, peak GiB, and the ratios
easel / diffusers; the figures go to bench/results/ (``baseline``: the diffusers row).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import FLUX_VAE, ROOT, SDXL_UNET, build, default_rank, markdown_table  # noqa: E402
from results import finish, metric  # noqa: E402

SCRIPTS = {"sdxl": "examples/dreambooth/train_dreambooth_lora_sdxl.py", "zimage": "examples/dreambooth/train_dreambooth_lora_z_image.py"}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
PROMPT = "a photo of sks dog"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusers", required=True, help="a huggingface/diffusers checkout (its examples/ folder)")
    parser.add_argument("--only", choices=list(SCRIPTS), help="one architecture (default: both)")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25, help="optimizer steps per trainer")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    parser.add_argument("--rank", type=int, help="LoRA rank = alpha (default: 32 for Z-Image, 16 for SDXL)")
    parser.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default="adamw")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--work", help="folder for the models, images and runs (default: a temporary one)")
    parser.add_argument("--peer-args", default="", help="more arguments for the diffusers script, e.g. --peer-args=--offload")
    parser.add_argument("--tiny", action="store_true", help="tiny models, on the CPU: checks the easel side of the script")
    parser.add_argument("--results", metavar="DIR", help="append the figures to DIR/<date>-<device>.json (default on a GPU: bench/results)")
    parser.add_argument("--no-results", action="store_true")
    return parser.parse_args(argv)


def sdxl_pipeline(tiny: bool) -> Any:
    """SDXL with the full-size UNet and VAE; text encoders of the real widths with 2 layers."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from families.unet.tiny import scheduler_config
    from toolkit.testing.tiny import clip_tokenizer, tiny_clip

    if tiny:
        from extensions.sdxl.tiny import pipeline

        return pipeline()
    tokenizer, cpu, dtype = clip_tokenizer(), torch.device("cpu"), torch.bfloat16
    vae = {**FLUX_VAE, "latent_channels": 4, "scaling_factor": 0.13025, "shift_factor": None, "use_quant_conv": True,
           "use_post_quant_conv": True}
    return StableDiffusionXLPipeline(
        vae=build(AutoencoderKL, vae, cpu, dtype, seed=1), unet=build(UNet2DConditionModel, SDXL_UNET, cpu, dtype, seed=2),
        text_encoder=tiny_clip(tokenizer, 3, hidden=768).to(dtype), text_encoder_2=tiny_clip(tokenizer, 4, projection=True, hidden=1280).to(dtype),
        tokenizer=tokenizer, tokenizer_2=tokenizer, force_zeros_for_empty_prompt=True,
        scheduler=EulerDiscreteScheduler.from_config(scheduler_config() | {"timestep_spacing": "leading"}))


def model_folder(arch: str, work: Path, tiny: bool) -> Path:
    """The random-weight model as a diffusers folder, written once."""
    import torch

    folder = work / f"{arch}{'-tiny' if tiny else ''}"
    if not (folder / "model_index.json").is_file():
        if arch == "sdxl":
            pipe = sdxl_pipeline(tiny)
        else:
            from gpu_sample import pipeline

            pipe = pipeline(tiny, torch.bfloat16)
        pipe.save_pretrained(folder, safe_serialization=True)
        del pipe
    return folder


def images(folder: Path, count: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        path = folder / f"{index:03d}.png"
        if not path.is_file():
            pixels = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((size, size), Image.BICUBIC).save(path)
    return folder


def easel_command(arch: str, model: Path, data: Path, out: Path, args: argparse.Namespace, rank: int) -> list[str]:
    process = {
        "type": "lora_trainer", "training_folder": str(out), "device": "cpu" if args.tiny else "auto",
        "network": {"type": "lora", "linear": rank, "linear_alpha": rank, "target_modules": TARGETS},
        "datasets": [{"folder_path": str(data), "resolution": [args.resolution], "default_caption": PROMPT,
                      "cache_latents": arch == "zimage"}],
        "train": {"steps": args.steps, "batch_size": 1, "lr": 1e-4, "optimizer": args.optimizer, "dtype": "bf16",
                  "gradient_checkpointing": True, "cache_text_embeddings": True, "unload_text_encoder": True,
                  "disable_sampling": True, "max_grad_norm": 1.0},
        "save": {"save_every": 10 ** 6},
        "model": {"name_or_path": str(model), "arch": "zimage" if arch == "zimage" else "sdxl"},
    }
    config = out / "easel.json"
    out.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"job": "extension", "config": {"name": "easel", "process": [process]}}), encoding="utf-8")
    return [str(ROOT / "run.py"), str(config)]


def peer_command(arch: str, model: Path, data: Path, out: Path, args: argparse.Namespace, rank: int) -> list[str]:
    """diffusers' script with the same settings (their argument names, from the scripts' argparse)."""
    command = [str(Path(args.diffusers).expanduser().resolve() / SCRIPTS[arch]), "--pretrained_model_name_or_path", str(model),
               "--instance_data_dir", str(data), "--instance_prompt", PROMPT, "--output_dir", str(out),
               "--resolution", str(args.resolution), "--train_batch_size", "1", "--max_train_steps", str(args.steps),
               "--rank", str(rank), "--learning_rate", "1e-4", "--mixed_precision", "bf16", "--gradient_checkpointing",
               "--checkpointing_steps", str(10 ** 6), "--seed", "0", "--max_grad_norm", "1.0"]
    if arch == "sdxl":
        command += ["--pretrained_vae_model_name_or_path", str(model / "vae")]  # the bf16 VAE, as easel's
    else:
        command += ["--lora_alpha", str(rank), "--cache_latents", "--skip_final_inference"]
    if args.optimizer == "adamw8bit":
        command.append("--use_8bit_adam")
    return command + args.peer_args.split()


def timed(name: str, command: list[str], folder: Path, warmup: int) -> dict[str, Any]:
    """Run ``command`` under peer_runner.py; the median step time after ``warmup`` steps and the peak."""
    out = folder / f"{name}.steps.json"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    with log.open("w", encoding="utf-8") as stream:
        subprocess.run([sys.executable, str(Path(__file__).with_name("peer_runner.py")), str(out), *command],
                       stdout=stream, stderr=subprocess.STDOUT, cwd=str(folder), check=False)
    found = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {"step_ends": [], "peak_gib": None, "exit": None}
    ends = found["step_ends"]
    gaps = [b - a for a, b in zip(ends, ends[1:])][max(warmup - 1, 0):]
    note = "" if found["exit"] == 0 else f"exit {found['exit']}, see {log}"
    return {"seconds": statistics.median(gaps) if gaps else None, "peak": found["peak_gib"], "steps": len(ends), "note": note}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    given = argv if argv is not None else sys.argv[1:]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="easel-peers-"))
    data = images(work / "images", args.images, args.resolution)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    rows, records = [], []
    for arch in [args.only] if args.only else list(SCRIPTS):
        rank = args.rank or default_rank(arch)
        model = model_folder(arch, work, args.tiny)
        theirs = timed(f"{arch}-diffusers", peer_command(arch, model, data, work / f"{arch}-diffusers", args, rank), work, args.warmup)
        ours = timed(f"{arch}-easel", easel_command(arch, model, data, work / f"{arch}-easel", args, rank), work, args.warmup)
        ratio = ours["seconds"] / theirs["seconds"] if ours["seconds"] and theirs["seconds"] else None
        for name, run in (("diffusers", theirs), ("easel", ours)):
            case = f"{arch} LoRA r{rank}, {name} trainer, {args.optimizer}"
            rows.append([case, f"{args.resolution}", f"{run['seconds']:.3f}" if run["seconds"] else "-",
                         f"{run['peak']:.2f}" if run["peak"] is not None else "n/a",
                         f"{ratio:.3f}" if name == "easel" and ratio else "", run["note"]])
            record = {"case": case, "arch": arch, "trainer": name, "resolution": args.resolution, "rank": rank, "batch": 1,
                      "optimizer": args.optimizer, "s_per_step": run["seconds"], "peak_gib": run["peak"], "steps": run["steps"],
                      "note": run["note"], "baseline": None}
            if name == "easel":  # only easel's own figure counts toward the goals
                record[metric(arch, args.resolution, "s_per_step")] = run["seconds"]
                if ratio is not None:
                    record["baseline"] = {"case": records[-1]["case"], "s_per_step": theirs["seconds"], "ratio": round(ratio, 4),
                                          "peak_gib": theirs["peak"]}
            records.append(record)
    print(f"\n{markdown_table(['case', 'res', 's/step', 'peak GiB', 'easel / diffusers', 'notes'], rows)}\n")
    finish("peers.py", given, device, lambda: records, args.results, args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
