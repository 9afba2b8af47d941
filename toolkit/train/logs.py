"""What a run reports: the progress bar, ``loss.csv``, TensorBoard, wandb and the ``loss.png`` curve.

Only the main process reports; the others get a ``TrainLog`` with ``enabled=False`` that does nothing.
``loss.csv`` has one row per step (step, loss, lr, seconds); a resumed run first cuts it back to the step
it resumes from, then appends, so the file always reads like one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.output import append_text, write_text_atomic
from toolkit.paths import safe_child

if TYPE_CHECKING:
    from toolkit.config.blocks import LoggingConfig

HEADER = ["step", "loss", "lr", "seconds"]


def read_losses(path: Path) -> list[dict[str, float]]:
    """The rows of a loss.csv as numbers."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _csv_line(*values: object) -> str:
    stream = io.StringIO()
    csv.writer(stream).writerow(values)
    return stream.getvalue()


def _cut_csv(path: Path, step: int) -> None:
    """Keep the header and the rows up to ``step`` (a resumed run rewrites what follows), in one atomic write."""
    rows = [row for row in read_losses(path) if row["step"] <= step] if path.is_file() else []
    write_text_atomic(path, _csv_line(*HEADER) + "".join(
        _csv_line(int(row["step"]), repr(row["loss"]), repr(row["lr"]), f"{row['seconds']:.3f}") for row in rows))


class TrainLog:
    """Per-step reporting of one run."""

    def __init__(self, folder: Path, *, enabled: bool, total_steps: int, start_step: int, config: "LoggingConfig", run_name: str):
        self.folder = folder
        self.enabled = enabled
        self.config = config
        self.csv_path = folder / "loss.csv"
        self.smoothed: float | None = None
        self._bar: Any = None
        self._tensorboard: Any = None
        self._wandb: Any = None
        if not enabled:
            return
        from tqdm.auto import tqdm

        folder.mkdir(parents=True, exist_ok=True)
        _cut_csv(self.csv_path, start_step)
        self._bar = tqdm(total=total_steps, initial=start_step, desc=run_name, unit="step", dynamic_ncols=True)
        if config.log_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(safe_child(config.log_dir, run_name, "config.name")),
                                              purge_step=start_step + 1)
        if config.use_wandb:
            self._wandb = _start_wandb(config, run_name, folder)

    def step(self, step: int, loss: float, lr: float, seconds: float) -> None:
        """Record one optimizer step."""
        if not self.enabled:
            return
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        append_text(self.csv_path, _csv_line(step, repr(loss), repr(lr), f"{seconds:.3f}"))
        self._bar.set_postfix(loss=f"{self.smoothed:.4f}", lr=f"{lr:.2e}", refresh=False)
        self._bar.update(1)
        if step % self.config.log_every == 0:
            if self._tensorboard is not None:
                self._tensorboard.add_scalar("loss", loss, step)
                self._tensorboard.add_scalar("lr", lr, step)
            if self._wandb is not None:
                self._wandb.log({"loss": loss, "lr": lr}, step=step)

    def write(self, message: str) -> None:
        """A log line that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.clear()
        log.info(message)
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def plot(self) -> Path | None:
        """Draw loss.csv as loss.png beside it; returns the path (None when there is nothing to draw)."""
        if not self.enabled:
            return None
        rows = read_losses(self.csv_path)
        if len(rows) < 2:
            return None
        path = self.folder / "loss.png"
        draw_loss_curve([r["step"] for r in rows], [r["loss"] for r in rows], path)
        return path


def _start_wandb(config: "LoggingConfig", run_name: str, folder: Path) -> Any:
    try:
        import wandb
    except ImportError:
        raise EaselError("logging.use_wandb needs the wandb package: `pip install wandb` and `wandb login`, "
                         "or set use_wandb: false.") from None
    return wandb.init(project=config.project_name, name=config.run_name or run_name, dir=str(folder), resume="allow")


def draw_loss_curve(steps: list[float], losses: list[float], path: Path, size: tuple[int, int] = (800, 400)) -> None:
    """A plain line chart of the loss (raw in grey, smoothed in blue), drawn with PIL."""
    from PIL import Image, ImageDraw

    from toolkit.output import atomic_path

    width, height = size
    left, right, top, bottom = 70, 20, 20, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    first, last = steps[0], steps[-1]

    def point(step: float, value: float) -> tuple[float, float]:
        x = left + (step - first) / ((last - first) or 1) * (width - left - right)
        y = top + (high - value) / span * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.line([point(s, v) for s, v in zip(steps, losses)], fill=(190, 190, 190), width=1)
    smooth, current = [], losses[0]
    for value in losses:
        current = 0.9 * current + 0.1 * value
        smooth.append(current)
    draw.line([point(s, v) for s, v in zip(steps, smooth)], fill=(30, 90, 200), width=2)
    draw.text((5, top), f"{high:.4g}", fill="black")
    draw.text((5, height - bottom - 10), f"{low:.4g}", fill="black")
    draw.text((left, height - bottom + 8), f"step {int(first)}", fill="black")
    draw.text((width - right - 90, height - bottom + 8), f"step {int(last)}", fill="black")
    draw.text((width // 2 - 30, height - bottom + 8), "loss", fill=(30, 90, 200))
    with atomic_path(path) as temp:
        image.save(temp, format="PNG")
