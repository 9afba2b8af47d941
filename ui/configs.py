"""Configs as the CLI sees them: validated by ``load_job_config`` with the registry, checked by ``run.py --dry-run``.

The UI never parses a config its own way to decide whether it is good: the schema check is the loader's
(the same ConfigError paragraph the CLI prints, with lines), and before a job is queued the CLI's own dry run
(datasets scanned, files checked, no model loaded) runs on the exact file the worker will run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, EaselError, format_path
from toolkit.paths import safe_child

if TYPE_CHECKING:
    from toolkit.config.job import LoadedJob
    from toolkit.registry import Registry

RUN_PY = Path(__file__).resolve().parent.parent / "run.py"
DRY_RUN_TIMEOUT = 120


@dataclass
class Check:
    """The outcome of checking a config text."""

    ok: bool
    message: str = ""
    """The CLI's error paragraph (empty when ok)."""
    issues: list[dict[str, Any]] = field(default_factory=list)
    """Each problem with its line, column, YAML path and message (for marking the editor)."""
    loaded: "LoadedJob | None" = None


def check_text(text: str, registry: "Registry", source: Path) -> Check:
    """Validate ``text`` as the config file ``source`` (written there first, so messages name that file)."""
    from toolkit.config.job import load_job_config

    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text, encoding="utf-8")
    try:
        loaded = load_job_config(source, registry)
    except ConfigError as err:
        issues = [{"line": i.line, "column": i.column, "path": format_path(i.path), "message": i.message} for i in err.issues]
        return Check(False, f"error: {err}", issues)
    except EaselError as err:
        return Check(False, f"error: {err}")
    return Check(True, loaded=loaded)


def check_draft(text: str, registry: "Registry", state: Path) -> Check:
    """Validate a config being edited (in a temporary file under the UI's state folder)."""
    drafts = state / "drafts"
    drafts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="editor-", dir=drafts) as folder:
        return check_text(text, registry, Path(folder) / "job.yaml")


def dry_run(path: Path, cwd: Path) -> tuple[bool, str]:
    """``python run.py --dry-run PATH``: (passed, what it printed)."""
    try:
        done = subprocess.run([sys.executable, str(RUN_PY), "--dry-run", str(path)], cwd=cwd, capture_output=True,
                              text=True, timeout=DRY_RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"error: the dry run of {path} took longer than {DRY_RUN_TIMEOUT} s."
    return done.returncode == 0, (done.stderr if done.returncode else done.stdout).strip()


@dataclass(frozen=True)
class Facts:
    """What the queue and the watch page need to know about a validated config."""

    name: str
    kind: str
    device: str
    run_dir: Path | None
    """The training run folder (training jobs only)."""
    total_steps: int | None
    prompts: list[str]
    """The sample prompts (training jobs with a ``sample:`` block)."""


def facts(loaded: "LoadedJob") -> Facts:
    """Name, kind, device, run folder, steps and preview prompts of a loaded config (its first process)."""
    first = loaded.processes[0]
    device = str(getattr(first, "device", "cpu") or "cpu")
    folder = getattr(first, "training_folder", None)
    run_dir = safe_child(Path(folder), loaded.name, "config.name") if folder is not None else None
    train = getattr(first, "train", None)
    sample = getattr(first, "sample", None)
    prompts = [item.prompt for item in sample.all_prompts()] if sample is not None and hasattr(sample, "all_prompts") else []
    steps = getattr(train, "steps", None) if train is not None else None
    return Facts(loaded.name, loaded.spec.name, device, run_dir, steps, prompts)
