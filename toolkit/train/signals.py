"""Stopping a run cleanly: SIGINT / SIGTERM finish the current step, which is saved, then the run exits."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from toolkit.errors import Interrupted
from toolkit.log import log


class StopSignals:
    """SIGINT / SIGTERM set a flag that the loop checks after each step; a second one stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        log.warning(f"\nstop requested (signal {signum}): finishing this step and saving; press Ctrl-C again to stop without saving.")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
