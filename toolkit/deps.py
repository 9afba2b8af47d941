"""Library versions: the known breaks between the libraries easel relies on, and the lock of tested versions.

``run.py`` calls :func:`check_installed` before any job, so a mismatch is one clear paragraph at start rather
than a failure deep inside a job. From the command line:

``python -m toolkit.deps check``
    the installed versions against the known breaks.
``python -m toolkit.deps check-latest [--update-lock]``
    a fresh virtual environment with the newest versions ``requirements.txt`` allows runs the test suite;
    with ``--update-lock`` a green run writes those versions to ``requirements.lock``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from toolkit.errors import EaselError

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
UNLOCKED = ("torch",)
"""Chosen by the machine (the CPU build here, the CUDA build for a user's card), so never pinned by the lock."""


@dataclass(frozen=True)
class Break:
    """``library`` from version ``since`` on works only with ``needs`` at ``at_least`` or newer."""

    library: str
    since: str
    needs: str
    at_least: str
    why: str


KNOWN_BREAKS = (
    Break("transformers", "5.24", "peft", "0.22",
          "its PEFT integration (used when a LoRA is loaded into a text encoder) refuses older peft releases"),
)


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def broken(breaks: tuple[Break, ...] = KNOWN_BREAKS, version_of: Callable[[str], str | None] | None = None) -> list[str]:
    """One sentence per known break that the installed versions (or ``version_of``'s) fall into."""
    from packaging.version import Version

    version_of = version_of or installed
    found = []
    for rule in breaks:
        have, other = version_of(rule.library), version_of(rule.needs)
        if have is None or other is None:
            continue
        if Version(have) >= Version(rule.since) and Version(other) < Version(rule.at_least):
            found.append(f"{rule.library} {have} needs {rule.needs} >= {rule.at_least} ({rule.why}), "
                         f"but {rule.needs} {other} is installed")
    return found


def check_installed() -> None:
    """Raise one paragraph naming every known version break among the installed libraries."""
    problems = broken()
    if problems:
        raise EaselError("incompatible library versions: " + "; ".join(problems) + ". Install the tested versions "
                         f"with `pip install -r requirements.txt -c {LOCK.name}` (or upgrade the second library).")


def lock_lines(freeze: list[str]) -> list[str]:
    """The lock's entries from ``pip freeze`` output: exact pins, without the machine-chosen packages."""
    pins = []
    for line in freeze:
        line = line.strip()
        if not line or line.startswith("#") or "==" not in line:
            continue  # editable installs and direct references are not pins
        name = line.split("==")[0].strip().lower().replace("_", "-")
        if name not in UNLOCKED and not name.startswith("nvidia-") and name != "triton":
            pins.append(line)
    return sorted(pins, key=str.lower)


def write_lock(freeze: list[str], python: str) -> None:
    header = ["# Exact versions the test suite passed with (a pip constraints file). Written by",
              "# `python -m toolkit.deps check-latest --update-lock`; do not edit by hand.",
              f"# Python {python}; torch is left out (the machine chooses its build, see README)."]
    LOCK.write_text("\n".join(header + lock_lines(freeze)) + "\n", encoding="utf-8")


SUITE_ARGS = ("-q", "-n", "2")
"""The README's test command's pytest arguments (two workers, pytest-xdist)."""


def check_latest(torch_spec: str, update_lock: bool, pytest_args: list[str]) -> int:
    """Build a venv with the newest allowed versions, run the suite in it, and optionally lock those versions."""
    with tempfile.TemporaryDirectory(prefix="easel-latest-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        requirements = ["-r", str(ROOT / "requirements.txt"), "-r", str(ROOT / "requirements-dev.txt")]
        subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", torch_spec, *requirements], check=True)
        freeze = subprocess.run([python, "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
        print("newest allowed versions:\n" + "\n".join(f"  {line}" for line in lock_lines(freeze.splitlines())))
        tests = subprocess.run([python, "-m", "pytest", *SUITE_ARGS, *pytest_args], cwd=ROOT)
        if tests.returncode != 0:
            print(f"the suite fails with the newest versions (exit {tests.returncode}); {LOCK.name} is unchanged. "
                  "Fix easel for them, or bound the library in requirements.txt with a comment saying why.")
            return tests.returncode
        if update_lock:
            version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                     check=True, capture_output=True, text=True).stdout.strip()
            write_lock(freeze.splitlines(), version)
            print(f"the suite passes; {LOCK} updated (commit it).")
        else:
            print("the suite passes with the newest versions; rerun with --update-lock to lock them.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.deps", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check the installed versions against the known breaks")
    latest = commands.add_parser("check-latest", help="run the suite with the newest allowed versions in a fresh venv")
    latest.add_argument("--update-lock", action="store_true", help=f"write the versions to {LOCK.name} when the suite passes")
    latest.add_argument("--torch", default="torch==2.13.0", help="the torch requirement (default: the CPU build of CI)")
    latest.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = broken()
        print("\n".join(problems) if problems else "no known version breaks among the installed libraries")
        return 2 if problems else 0
    return check_latest(args.torch, args.update_lock, args.pytest_args)


if __name__ == "__main__":
    sys.exit(main())
