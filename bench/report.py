"""The tables of docs/PERFORMANCE.md made from the results files (bench/results/*.json), never typed by hand.

Run: python bench/report.py            # print the section
     python bench/report.py --write    # put it into docs/PERFORMANCE.md, between its two marker lines
     python bench/report.py --check    # exit 1 when the page is not what the files say (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import markdown_table  # noqa: E402
from results import RESULTS, load  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
BEGIN = "<!-- begin: made by `python bench/report.py --write` from bench/results/*.json; edit those files, not this table -->"
END = "<!-- end: bench/report.py -->"


@dataclass(frozen=True)
class Goal:
    what: str
    key: str
    limit: float
    unit: str
    peak_limit: float | None = None
    command: str = ""
    name: str = ""
    """Short name (``bench/gpu_goals.py --only``)."""
    expected_s: int = 300
    """About how long the command takes on an H100 or H200, building the random-weight models included."""


GOALS = [
    Goal("Z-Image LoRA step at 1024 (rank 32, batch 1)", "zimage_1024_s_per_step", 0.30, "s/step",
         command="python bench/gpu_train.py --only zimage --quantize float8_mm --variants default,float8_mm,float8_mm+compile,float8_mm+compile+ckpt=0",
         name="zimage_train", expected_s=330),
    Goal("SDXL LoRA step at 1024 (rank 16, batch 1)", "sdxl_1024_s_per_step", 0.45, "s/step",
         command="python bench/gpu_train.py --only sdxl --quantize none --variants default,compile,graphs,graphs+ckpt=0",
         name="sdxl_train", expected_s=200),
    Goal("Z-Image-Turbo image, 8 steps at 1024", "zimage_turbo_1024_s_per_image", 0.7, "s/image", peak_limit=14.0,
         command="python bench/gpu_sample.py --quantize float8_mm --quantize-te float8 --compile", name="turbo_image",
         expected_s=240),
    Goal("SDXL image, 30 steps at 1024", "sdxl_1024_s_per_image", 2.0, "s/image", command="python bench/gpu_sample.py --arch sdxl --compile",
         name="sdxl_image", expected_s=150),
]


FIGURES = [("s/step", "s_per_step"), ("s/image", "s_per_image"), ("s/decode", "decode_s")]
"""Each record's figure in the runs table: (unit, field), the first field the record has."""


def records(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(run, record) pairs, in file and run order."""
    return [(run, record) for run in runs for record in run["records"]]


def number(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def goal_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for goal in GOALS:
        measured = [(run, record) for run, record in records(runs) if record.get(goal.key) is not None]
        target = f"<= {goal.limit:g} {goal.unit}" + (f", <= {goal.peak_limit:g} GiB" if goal.peak_limit else "")
        if not measured:
            rows.append([goal.what, target, "not measured", "", "", f"`{goal.command}`"])
            continue
        run, best = min(measured, key=lambda pair: pair[1][goal.key])
        met = best[goal.key] <= goal.limit and (goal.peak_limit is None or (best.get("peak_gib") or 1e9) <= goal.peak_limit)
        figure = f"{best[goal.key]:.3f} {goal.unit}, {number(best.get('peak_gib'), 2)} GiB"
        rows.append([goal.what, target, f"{figure} ({'met' if met else 'not met'})", best["case"],
                     f"{run['device']}, {run['date']}", f"`{run['command']}`"])
    return rows


def run_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for run, record in records(runs):
        unit, field = next(((unit, field) for unit, field in FIGURES if field in record), FIGURES[0])
        figure = record.get(field)
        baseline = record.get("baseline")
        versus = f"{baseline['ratio']:.3f}" if baseline else ""
        source = run.get("source", "script")
        rows.append([run["date"], run["device"], record["case"], f"{number(figure)} {unit}" if figure is not None else
                     record.get("note") or "n/a", number(record.get("peak_gib"), 2), versus, f"`{run['command']}`", source])
    return rows


def section(folder: Path = RESULTS) -> str:
    runs = load(folder)
    versions = sorted({", ".join(f"{k} {v}" for k, v in run["versions"].items()) for run in runs})
    parts = [BEGIN, "",
             "Goals (issue 22; GPU, batch 1, random-weight full-size models), best figure of all results files:", "",
             markdown_table(["goal", "target", "best measured", "case", "device, date", "command"], goal_rows(runs)), "",
             "Every recorded run. \"x baseline\": this figure over the same run's eager bf16 row of that model (every block "
             "checkpointed, not compiled). \"source\": script, written by the benchmark itself; typed in, copied from the "
             "printed table of a run made before the scripts wrote results files.", "",
             markdown_table(["date", "device", "case", "figure", "peak GiB", "x baseline", "command", "source"], run_rows(runs)),
             "", "Versions: " + ("; ".join(versions) if versions else "none recorded") + ".", "", END]
    return "\n".join(parts)


def replaced(page: str, new: str) -> str:
    """``page`` with the text between the markers (inclusive) replaced by ``new``."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOC}: the marker lines of bench/report.py are missing; put\n{BEGIN}\n{END}\nwhere the tables go.")
    return page[:start] + new + page[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/PERFORMANCE.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/PERFORMANCE.md is out of date")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the results files")
    args = parser.parse_args(argv)
    text = section(Path(args.results))
    page = DOC.read_text(encoding="utf-8")
    if args.check:
        if replaced(page, text) != page:
            print(f"{DOC} is out of date with {args.results}: run python bench/report.py --write", file=sys.stderr)
            return 1
        return 0
    if args.write:
        DOC.write_text(replaced(page, text), encoding="utf-8")
        print(f"wrote {DOC}")
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
