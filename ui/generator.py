"""The generate worker: a long-lived process that runs generate jobs and keeps the base model loaded.

Each click of "Generate" becomes a ``job: generate`` config file, validated like any other; the worker runs it
the way ``run.py`` does (the registry's job class), passing its ``AdapterCache`` so the model loaded for one
request serves the next. Its console output goes to ``<state>/generate.log``. If it dies (a crash, out of
memory), the request reports that with the log's tail, and the next request starts a fresh worker.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ui.runs import tail_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
REPO = Path(__file__).resolve().parent.parent


class Generator:
    """The server's handle on the generate worker (started on first use, one request at a time)."""

    def __init__(self, state: Path, root: Path):
        self.log = state / "generate.log"
        self.root = root
        self._process: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child, str(self.log), str(self.root)), daemon=True,
                                        name="easel-generate")
        self._process.start()
        child.close()
        self._conn = parent

    def run(self, config: Path, timeout: float = 1800) -> dict[str, Any]:
        """Run the generate config file ``config``: ``{"ok", "images", "error", "loads"}``."""
        with self._lock:
            self._ensure()
            try:
                self._conn.send({"config": str(config)})
                if not self._conn.poll(timeout):
                    self.close()
                    return {"ok": False, "error": f"generation took longer than {timeout:.0f} s; the worker was stopped."}
                return self._conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                self._process.join(5)
                code = self._process.exitcode
                self._process = None
                return {"ok": False, "error": f"the generate worker died (exit code {code}); it starts again on the next "
                                              f"request. Its last output:\n{tail_text(self.log, 20)}"}

    def close(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join(10)
            self._process = None


def _images(folder: Path) -> set[Path]:
    return {p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES} if folder.is_dir() else set()


def run_config(path: Path, registry: Any, cache: Any) -> dict[str, Any]:
    """Run one generate config as run.py would, with the shared adapter cache; returns the new images."""
    from toolkit.config.job import load_job_config
    from toolkit.errors import EaselError
    from toolkit.job import RunOptions
    from toolkit.registry import load_object

    try:
        loaded = load_job_config(path, registry)
        folders = [Path(process.output_folder) for process in loaded.processes]
        before = set().union(*(_images(folder) for folder in folders))
        job = load_object(loaded.spec.runner)(loaded, registry, RunOptions(), adapters=cache)
        try:
            job.run()
        finally:
            job.cleanup()
    except EaselError as err:
        return {"ok": False, "error": f"error: {err}", "loads": cache.loads}
    except Exception as err:  # a bug or an environment failure: reported, the worker lives on
        return {"ok": False, "error": f"error: unexpected {type(err).__name__}: {err}", "loads": cache.loads}
    after = set().union(*(_images(folder) for folder in folders))
    return {"ok": True, "images": sorted(str(p.resolve()) for p in after - before), "loads": cache.loads}


def serve(conn: Any, log: str, root: str) -> None:
    """The worker's main: answer each request on ``conn`` until it closes."""
    os.chdir(root)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "ab", buffering=0)  # noqa: SIM115 - stays open for the process's life
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    from jobs.generate import AdapterCache
    from toolkit.log import setup_console
    from toolkit.registry import Registry

    setup_console()
    registry = Registry.discover(("jobs",), REPO / "extensions")
    cache = AdapterCache()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        conn.send(run_config(Path(message["config"]), registry, cache))
