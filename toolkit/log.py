"""easel's logger: messages to the console and, during a run, to the run folder's log.txt."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("easel")


class _Console(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test capture and tqdm redirection included)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")
"""Libraries that log warnings when merely imported (torchao's CUDA-only kernels on a CPU build, its
``register_constant`` deprecations, diffusers' check of torchao's tensor types): only their errors are shown."""


EXPECTED_WARNINGS = {
    "transformers.utils.import_utils": "requires torchvision (not installed); falling back to",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
}
"""Logger -> the one message of it that is dropped. Both appear on every SD / SDXL / Z-Image run and ask nothing
of the user: easel does not need torchvision (the PIL image processors transformers falls back to are what it
uses), and bitsandbytes' optional CPU 4-bit kernel is fetched from the hub by the separate ``kernels`` package
(bitsandbytes runs without it). Every other message of these loggers is still shown."""


class _DropMessage(logging.Filter):
    """Drops the records whose message contains ``fragment``."""

    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def setup_console(verbose: bool = False) -> None:
    """Print easel's messages to stderr, once; quiet the libraries' expected warnings."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name, fragment in EXPECTED_WARNINGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) for f in logger.filters):
            logger.addFilter(_DropMessage(fragment))
    if not any(isinstance(h, _Console) for h in log.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


class _RunLog(logging.FileHandler):
    """A run's log.txt. When the disk fills up it says so once on the console and stops writing, instead of
    printing a logging traceback for every message."""

    full = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.full:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        from toolkit.errors import is_disk_full

        if is_disk_full(sys.exc_info()[1]):
            self.full = True
            sys.stderr.write(f"warning: no space left on device at {self.baseFilename}; it stops here, its earlier "
                             "lines are intact (the console shows the rest).\n")
            return
        super().handleError(record)

    def close(self) -> None:
        from toolkit.errors import is_disk_full

        try:
            super().close()
        except OSError as err:  # flushing what a full disk refused: the file is closed all the same
            if not is_disk_full(err):
                raise


def attach_file(path: Path) -> logging.Handler:
    """Also append messages, time-stamped, to ``path`` until ``detach`` is called."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RunLog(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return handler


def detach(handler: logging.Handler) -> None:
    log.removeHandler(handler)
    handler.close()
