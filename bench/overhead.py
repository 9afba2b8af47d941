"""easel's training step against a minimal hand-written diffusers + peft loop, on the same tiny model (goal: ratio <= 1.05).

Run: python bench/overhead.py [--arch zimage|sd15] [--batch 4] [--resolution 128] [--rounds 8] [--steps 10]

A (easel): the real trainer. A config is prepared by ``LoraTrainingRecipe.setup`` (accelerate, the
adapter, the data loader with in-memory latent and text caches, the ``Network``, ``DiffusionStep``, AdamW,
gradient clipping) and each step is the recipe's ``_train_step``, exactly what ``python run.py`` runs per step.
B (reference): the same denoiser loaded with diffusers from the same folder, a peft ``LoraConfig`` on the
same layers at the same rank, torch AdamW with the same settings, the same noise math written inline,
and one fixed batch of the same cached latents and text embeddings (no loader at all).
Rounds alternate A and B in one process; the medians of all timed steps and their ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL = 1.05


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["zimage", "sd15"], default="zimage")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128, help="image side; latents are 1/8 of it")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20, help="A/B rounds (alternating)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the first round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared machine)")
    return parser.parse_args(argv)


def make_dataset(folder: Path, count: int, size: int) -> None:
    """``count`` images of one size (one bucket), each with a different caption."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = Image.new("RGB", (size, size), (30 * index % 255, 120, 200 - 10 * index % 200))
        image.paste((250, 240, 220), (size // 4, size // 4, size // 2 + index % 8, size // 2))
        image.save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(f"a test picture number {index}")


def easel_config(folder: Path, args: argparse.Namespace) -> Path:
    process = {
        "type": "lora_trainer", "training_folder": str(folder / "out"), "device": "cpu",
        "network": {"type": "lora", "linear": args.rank, "linear_alpha": args.rank},
        "datasets": [{"folder_path": str(folder / "data"), "resolution": [args.resolution], "cache_latents": True}],
        "train": {"steps": 100000, "batch_size": args.batch, "lr": 1e-4, "optimizer": "adamw", "dtype": "fp32",
                  "gradient_checkpointing": False, "cache_text_embeddings": True, "unload_text_encoder": True,
                  "disable_sampling": True, "timestep_type": "sigmoid", "max_grad_norm": 1.0},
        "model": {"name_or_path": f"tiny:{args.arch}", "arch": args.arch},
    }
    path = folder / "overhead.json"
    path.write_text(json.dumps({"job": "extension", "config": {"name": "overhead", "process": [process]}}))
    return path


def easel_side(folder: Path, args: argparse.Namespace) -> tuple[Callable[[], float], Any, Any]:
    """The real trainer's step function, the run (for cleanup) and one batch (for the reference side)."""
    from functools import partial

    from toolkit.config.job import load_job_config
    from toolkit.data.loader import TrainData
    from toolkit.job import Job
    from toolkit.models.loading import load_model
    from toolkit.registry import Registry
    from toolkit.train.recipe import LoraTrainingRecipe

    registry = Registry.discover(("jobs",), ROOT / "extensions")
    job = Job(load_job_config(easel_config(folder, args), registry), registry)
    process = job.processes[0]
    recipe = LoraTrainingRecipe(process.config, job.loaded, process.arch, load_model=load_model,
                                data=partial(process.read_data, TrainData))
    recipe.setup()
    batches = recipe.data.batches(recipe.position)
    first = recipe.data.make_batch(recipe.data.share(recipe.data.plan(0)[0]), 0)
    return lambda: recipe._train_step(batches), recipe, first


def reference_side(args: argparse.Namespace, batch: Any, adapter: Any, fused: bool) -> Callable[[], float]:
    """A minimal diffusers + peft training step on the same weights, data and optimizer settings."""
    import torch
    from peft import LoraConfig

    from toolkit.models.tiny import tiny_builder, tiny_folder

    folder = tiny_folder(args.arch, tiny_builder(adapter.arch))
    if args.arch == "zimage":
        from diffusers import ZImageTransformer2DModel

        model = ZImageTransformer2DModel.from_pretrained(folder / "transformer")
    else:
        from diffusers import UNet2DConditionModel

        model = UNet2DConditionModel.from_pretrained(folder / "unet")
    model.requires_grad_(False).train()
    targets = adapter.lora_targets(False)[adapter.denoiser_name]
    model.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    for param in params:
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused)
    latents, cond = batch.latents, batch.cond
    alphas = adapter.noise_schedule().alphas_cumprod

    def step() -> float:
        noise = torch.randn_like(latents)
        if args.arch == "zimage":
            sigma = torch.sigmoid(torch.randn(latents.shape[0])).view(-1, 1, 1, 1)
            noisy = (1 - sigma) * latents + sigma * noise
            mask = cond["prompt_mask"].bool()
            captions = [row[keep] for row, keep in zip(cond["prompt_embeds"], mask)]
            out = model(list(noisy.unsqueeze(2).unbind(0)), 1 - sigma.flatten(), captions, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(-torch.stack(out).squeeze(2), noise - latents)
        else:
            t = torch.randint(0, 1000, (latents.shape[0],))
            a = alphas[t].sqrt().float().view(-1, 1, 1, 1)
            noisy = a * latents + (1 - alphas[t]).sqrt().float().view(-1, 1, 1, 1) * noise
            loss = torch.nn.functional.mse_loss(model(noisy, t, encoder_hidden_states=cond["prompt_embeds"]).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def timed(step: Callable[[], float], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from toolkit.log import setup_console

    setup_console()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="easel-overhead-") as tmp:
        folder = Path(tmp)
        make_dataset(folder / "data", max(8, 2 * args.batch), args.resolution)
        easel_step, run, batch = easel_side(folder, args)
        fused = bool(run.optimizer.optimizer.defaults.get("fused"))
        reference_step = reference_side(args, batch, run.adapter, fused)
        timed(easel_step, args.warmup)
        timed(reference_step, args.warmup)
        easel_times: list[float] = []
        reference_times: list[float] = []
        round_ratios: list[float] = []
        for _ in range(args.rounds):
            mine, theirs = timed(easel_step, args.steps), timed(reference_step, args.steps)
            round_ratios.append(statistics.median(mine) / statistics.median(theirs))
            easel_times += mine
            reference_times += theirs
        run.cleanup()
    a, b = statistics.median(easel_times), statistics.median(reference_times)
    ratio = a / b
    optimizer = "fused AdamW" if fused else "AdamW"
    print(f"\ntiny {args.arch}, batch {args.batch}, {args.resolution}px, LoRA rank {args.rank}, fp32, {optimizer} on both sides, "
          f"CPU x {args.threads} thread(s); {args.rounds} alternating rounds x {args.steps} steps per side")
    print(f"  easel trainer step      median {a * 1000:8.2f} ms  (p10 {_quantile(easel_times, 0.1) * 1000:.2f}, "
          f"p90 {_quantile(easel_times, 0.9) * 1000:.2f})")
    print(f"  diffusers + peft loop   median {b * 1000:8.2f} ms  (p10 {_quantile(reference_times, 0.1) * 1000:.2f}, "
          f"p90 {_quantile(reference_times, 0.9) * 1000:.2f})")
    print(f"  ratio easel / reference {ratio:.3f}  ({'ok' if ratio <= GOAL else 'OVER GOAL'}: goal <= {GOAL}); "
          f"median of the per-round ratios {statistics.median(round_ratios):.3f}")
    print("rerun: python bench/overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


if __name__ == "__main__":
    sys.exit(main())
