"""Run a training script as ``python SCRIPT ARGS...`` would, and record when each optimizer step ends.

Usage: python bench/peer_runner.py OUT.json SCRIPT [ARGS...]

The same measurement for every trainer, easel's ``run.py`` and a peer's script alike, without touching their code:
a global optimizer-step hook (every ``torch.optim.Optimizer``, bitsandbytes' 8-bit ones included) synchronizes the
GPU and notes the time after each step; the peak allocated GPU memory is counted from the end of the first step
(model loading and caching left out). OUT.json gets ``step_ends`` (seconds), ``peak_gib`` and ``exit`` (the
script's exit code), also when the script fails.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    out, script, *args = argv
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    cuda = torch.cuda.is_available()
    ends: list[float] = []

    def after_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if cuda:
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
        if len(ends) == 1 and cuda:
            torch.cuda.reset_peak_memory_stats()

    register_optimizer_step_post_hook(after_step)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))  # as `python SCRIPT` puts the script's folder first
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        code = 1
        raise
    finally:
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda and ends else None
        Path(out).write_text(json.dumps({"step_ends": ends, "peak_gib": peak, "exit": code}), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
