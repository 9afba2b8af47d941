"""Measure issue 22's GPU goals in one call: each goal's benchmark in turn, inside a time budget.

Run (GPU):  python bench/gpu_goals.py --budget 540 --results $OUT          # every goal that fits, most wanted first
            python bench/gpu_goals.py --only turbo_image,sdxl_image,vae --results $OUT
            python bench/gpu_goals.py --list                               # the plan, with the expected times

The goals and their commands are those of the goals table (``bench/report.py``'s ``GOALS``); ``vae`` (the VAE tiling
memory, ``bench/vae_memory.py``), ``optimizer`` (the optimizer step per tensor and flat, ``bench/optimizer_step.py``)
and ``peers`` (diffusers' example trainers side by side; needs ``--diffusers``) come
after them. A benchmark starts only when its expected time fits in what is left of ``--budget``, and is stopped when
the budget runs out; each writes its figures to ``--results`` and its output to ``<results>/<name>.log``. At the end
the goals table is printed from the results folder.

On a lent GPU machine that lacks diffusers, pydantic, torchao or optimum-quanto, ``bench/gpu_kit.sh`` (run here)
gathers their wheels into ``.gpu-kit/``; docs/PERFORMANCE.md ("Running the GPU benchmarks") has the device command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import ROOT, markdown_table  # noqa: E402
from report import GOALS, goal_rows  # noqa: E402
from results import load  # noqa: E402


@dataclass(frozen=True)
class Step:
    """One benchmark of the plan: its name, the command (from the repository root) and its expected seconds."""

    name: str
    command: str
    expected_s: int


EXTRAS = [Step("vae", "python bench/vae_memory.py", 60),
          Step("optimizer", "python bench/optimizer_step.py", 60),
          Step("peers", "python bench/peers.py --diffusers {diffusers}", 420)]
"""Measured after the goals: VAE tiling's memory, the flat optimizer step, and easel against diffusers' example
trainers."""


def plan(only: list[str] | None, diffusers: str | None) -> list[Step]:
    """The steps to run, in order: the goals (most wanted first), then the extras; ``only`` picks some by name."""
    steps = [Step(goal.name, goal.command, goal.expected_s) for goal in GOALS] + EXTRAS
    known = [step.name for step in steps]
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise SystemExit(f"--only: unknown name(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [step for step in steps if only is None or step.name in only]
    if diffusers is None:
        if only is not None and "peers" in only:
            raise SystemExit("--only peers needs --diffusers (a huggingface/diffusers checkout, or .gpu-kit/diffusers)")
        chosen = [step for step in chosen if step.name != "peers"]
    return [Step(step.name, step.command.replace("{diffusers}", diffusers or ""), step.expected_s) for step in chosen]


def run_step(step: Step, results: Path, seconds: float) -> str:
    """Run ``step`` (its output to the console and to ``results/<name>.log``) for at most ``seconds``: its outcome."""
    argv = [sys.executable, *shlex.split(step.command)[1:], "--results", str(results)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    with (results / f"{step.name}.log").open("w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(seconds, process.kill)  # also when the benchmark prints nothing for a while
        timer.start()
        try:
            for line in process.stdout or []:
                sys.stdout.write(line)
                log.write(line)
            code = process.wait()
        finally:
            timer.cancel()
    taken = time.monotonic() - started
    if taken >= seconds:
        return f"stopped at the budget after {taken:.0f} s"
    return f"done in {taken:.0f} s" if code == 0 else f"failed (exit {code}) after {taken:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=540, help="seconds for all the benchmarks together (default 540)")
    parser.add_argument("--only", help="comma-separated names (see --list)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"), help="where the figures and logs go")
    parser.add_argument("--diffusers", help="a huggingface/diffusers checkout for the peers step (default: .gpu-kit/diffusers if there)")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    kit = ROOT / ".gpu-kit" / "diffusers"
    diffusers = args.diffusers or (str(kit) if kit.is_dir() else None)
    steps = plan(args.only.split(",") if args.only else None, diffusers)
    if args.list:
        print(markdown_table(["name", "expected s", "command"], [[s.name, str(s.expected_s), f"`{s.command}`"] for s in steps]))
        return 0
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    outcomes = []
    for step in steps:
        left = deadline - time.monotonic()
        if step.expected_s > left:
            outcomes.append([step.name, f"skipped: expects {step.expected_s} s, {max(left, 0):.0f} s left", f"`{step.command}`"])
            continue
        print(f"\n=== {step.name}: {step.command} (expected {step.expected_s} s, {left:.0f} s left)", flush=True)
        outcomes.append([step.name, run_step(step, results, left), f"`{step.command}`"])
    print("\n" + markdown_table(["name", "outcome", "command"], outcomes))
    header = ["goal", "target", "best measured", "case", "device, date", "command"]
    print(f"\nGoals, from {results}:\n\n{markdown_table(header, goal_rows(load(results)))}")
    return 0 if all(row[1].startswith(("done", "skipped")) for row in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
