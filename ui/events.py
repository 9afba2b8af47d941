"""The watch page's server-sent events: what changed in a job's row, its run folder and its console log.

Every ``POLL`` seconds the stream looks at the job's row, the run folder's lock, loss.csv (read incrementally), the
console log's size, samples/ and the LoRA saves, and sends an event for each that changed: ``status`` (the row),
``holder`` (who holds the run folder, or null), ``progress`` (new loss rows, step / total, s/it, ETA, and
``written``: when the trainer wrote loss.csv, so the page can tell how late it sees a step), ``log`` (the tail),
``samples`` (step -> prompt -> URL), ``saves`` (name, step, size, URL). After the job ends and everything is
sent: ``end``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

from ui.files import file_url
from ui.runs import LossReader, in_use_by, samples, saves, tail_text, timing
from ui.store import FINISHED

POLL = 0.2
LOG_LINES = 60


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _total_from_log(run_dir: Path, name: str) -> int | None:
    """Steps of an epochs-based run, from the trainer's start line (``Training NAME: N steps on ...``)."""
    try:
        text = (run_dir / "log.txt").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    found = re.findall(rf"Training {re.escape(name)}: (\d+) steps", text)
    return int(found[-1]) if found else None


class JobWatch:
    """The state one stream has sent, to send only what changed."""

    def __init__(self, ui: Any, job_id: int):
        self.ui = ui
        self.job_id = job_id
        self.row = ui.store.get(job_id)
        self.run_dir = Path(self.row.run_dir) if self.row.run_dir else None
        self.loss = LossReader(self.run_dir / "loss.csv") if self.run_dir else None
        self.rows: list[tuple[int, float, float, float]] = []
        self.sent: dict[str, Any] = {}

    def _changed(self, key: str, value: Any) -> bool:
        if self.sent.get(key) == value:
            return False
        self.sent[key] = value
        return True

    def progress(self) -> str | None:
        assert self.loss is not None and self.run_dir is not None
        new = self.loss.read()
        if self.loss.offset == 0 and self.rows:
            self.rows = []  # loss.csv was cut back (a resumed run): start the curve again
        self.rows.extend(new)
        total = self.row.total_steps or _total_from_log(self.run_dir, self.row.name)
        step = self.rows[-1][0] if self.rows else 0
        if not new and not self._changed("total", total):
            return None
        self.sent["total"] = total
        per_step, left = timing(self.rows, step, total)
        try:
            written = (self.run_dir / "loss.csv").stat().st_mtime
        except FileNotFoundError:
            written = None
        return _event("progress", {"rows": [[r[0], r[1]] for r in new], "step": step, "total": total,
                                   "seconds_per_step": per_step, "eta": left, "written": written,
                                   "reset": len(new) == len(self.rows)})

    def files(self) -> list[str]:
        assert self.run_dir is not None
        settings = self.ui.settings
        out = []
        grid = {step: {index: file_url(settings, self.run_dir / "samples" / name) for index, name in row.items()}
                for step, row in samples(self.run_dir / "samples").items()}
        if self._changed("samples", grid):
            out.append(_event("samples", {str(step): row for step, row in grid.items()}))
        listed = [{"name": s.name, "step": s.step, "size": s.size, "url": file_url(settings, self.run_dir / s.name)}
                  for s in saves(self.run_dir, self.row.name)]
        if self._changed("saves", listed):
            out.append(_event("saves", listed))
        return out

    def poll(self) -> list[str]:
        """The events of one look."""
        self.row = self.ui.store.get(self.job_id) or self.row
        out = []
        if self._changed("status", self.row.as_dict()):
            out.append(_event("status", self.row.as_dict()))
        if self.run_dir is not None:
            if self._changed("holder", in_use_by(self.run_dir)):
                out.append(_event("holder", {"holder": self.sent["holder"]}))
            progress = self.progress()
            if progress:
                out.append(progress)
            out += self.files()
        log = self.ui.store.log_path(self.job_id)
        size = log.stat().st_size if log.is_file() else 0
        if self._changed("log_size", size):
            out.append(_event("log", {"text": tail_text(log, LOG_LINES)}))
        return out


async def job_events(ui: Any, job_id: int, request: Any) -> AsyncIterator[str]:
    """The event stream of one job until it has ended (or the page goes away)."""
    watch = JobWatch(ui, job_id)
    yield "retry: 1000\n\n"
    while True:
        events = watch.poll()
        for event in events:
            yield event
        if watch.row.status in FINISHED and not events:
            yield _event("end", {"status": watch.row.status})
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL)
