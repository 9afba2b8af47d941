"""Start-up time of ``run.py --help`` and ``run.py --dry-run`` (goal: under 1.5 s each).

Run: python bench/startup.py [--repeats 7]
Each command runs in a fresh interpreter, as a user would start it; the median wall time is printed,
and whether torch got imported (it must not be).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 1.5


def make_dataset(folder: Path, count: int = 20) -> None:
    from PIL import Image

    for i in range(count):
        Image.new("RGB", (640, 512), (i * 10 % 255, 80, 160)).save(folder / f"img_{i:03d}.png")
        (folder / f"img_{i:03d}.txt").write_text(f"a watercolor painting number {i}")


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imports_torch(args: list[str]) -> bool:
    probe = ("import sys, run\ntry:\n    run.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip().endswith("True")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args(argv).repeats
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp))
        dry = ["--dry-run", "tests/fixtures/aitoolkit_zimage_turbo.yaml", "--set", f"config.process.0.datasets.0.folder_path={tmp}"]
        cases = {"run.py --help": ["--help"], "run.py --dry-run (ai-toolkit Z-Image config, 20 images)": dry}
        print(f"python {sys.version.split()[0]}, {repeats} runs each, median wall time (goal < {GOAL_S} s)")
        for label, args in cases.items():
            seconds = median_seconds([sys.executable, "run.py", *args], repeats)
            verdict = "ok" if seconds < GOAL_S else "OVER GOAL"
            print(f"  {label:58s} {seconds:6.3f} s  {verdict}  torch imported: {imports_torch(args)}")
    print("rerun: python bench/startup.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
