"""``job: dataset``: prepare an image folder for training, step by step, without touching it.

The processes run in the order listed. The first reads ``input_folder`` (images with .txt sidecars,
metadata.jsonl or metadata.csv captions); each later one works on the previous one's result (in
memory; rewritten images go to a work folder beside the output); a process with ``output_folder``
writes the result so far there: the kept images (copied byte for byte unless resized), their
captions and ``report.json`` (every input image, kept or dropped, with the reason). The last
process must write. A printed table repeats the report.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar

from toolkit.errors import ConfigError, ConfigIssue
from toolkit.job import Job, Process
from toolkit.log import log
from toolkit.prep import steps
from toolkit.prep.pipeline import DatasetState, check_folders, format_report, list_images, read_dataset, write_dataset


class DatasetStep(Process):
    """One dataset process: applies its step function to the job's dataset state."""

    apply: ClassVar[Callable[[DatasetState, Any, str], None]]
    job: "DatasetJob"

    @property
    def label(self) -> str:
        return f"{self.config.type} (process {self.index})"

    def plan(self) -> list[str]:
        settings = self.config.model_dump(exclude={"type", "input_folder", "output_folder", "caption_ext"})
        lines = [f"process {self.index}: {self.config.type}" + (f" {settings}" if settings else "")]
        if self.config.input_folder:
            lines.append(f"  reads {self.config.input_folder}")
        if self.config.output_folder:
            lines.append(f"  writes {self.config.output_folder} (images, captions, report.json)")
        return lines

    def run(self) -> None:
        state = self.job.state
        before = len(state.items)
        type(self).apply(state, self.config, self.label)
        state.steps.append(self.label)
        log.info(f"{self.label}: {before} -> {len(state.items)} images")
        if self.config.output_folder:
            report = write_dataset(state, Path(self.config.output_folder), self.config.caption_ext)
            log.info(f"wrote {self.config.output_folder}\n{format_report(report)}")


class FilterProcess(DatasetStep):
    apply = staticmethod(steps.run_filter)


class DedupeProcess(DatasetStep):
    apply = staticmethod(steps.run_dedupe)


class ResizeProcess(DatasetStep):
    apply = staticmethod(steps.run_resize)


class ConvertCaptionsProcess(DatasetStep):
    apply = staticmethod(steps.run_convert_captions)


class TagProcess(DatasetStep):
    apply = staticmethod(steps.run_tag)


class DatasetJob(Job):
    """Reads the first process's input folder, runs the steps in order, writes where they say."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._check_chain()
        self.state: DatasetState
        self._work_dir: Path | None = None

    def _check_chain(self) -> None:
        issues: list[ConfigIssue] = []
        for index, process in enumerate(self.processes):
            where = ("config", "process", index)
            if index == 0 and not process.config.input_folder:
                issues.append(ConfigIssue(where + ("input_folder",), "the first process of a dataset job must set input_folder"))
            if index > 0 and process.config.input_folder:
                issues.append(ConfigIssue(where + ("input_folder",), "only the first process reads a folder; later ones take "
                                          "the previous process's result (remove input_folder here, or start another job)"))
        if not self.processes[-1].config.output_folder:
            issues.append(ConfigIssue(("config", "process", len(self.processes) - 1, "output_folder"),
                                      "the last process of a dataset job must set output_folder"))
        if issues:
            raise ConfigError(str(self.loaded.source), issues)

    def _outputs(self) -> list[Path]:
        return [Path(p.config.output_folder) for p in self.processes if p.config.output_folder]

    def plan(self) -> str:
        first = self.processes[0].config
        source = Path(first.input_folder)
        found = f"{len(list_images(source))} images" if source.is_dir() else "missing!"
        return f"{super().plan()}\n\ninput: {source} ({found}); output: {', '.join(map(str, self._outputs()))}"

    def run(self) -> None:
        first = self.processes[0].config
        outputs = self._outputs()
        check_folders(Path(first.input_folder), outputs)
        outputs[-1].parent.mkdir(parents=True, exist_ok=True)
        self._work_dir = Path(tempfile.mkdtemp(prefix=f".{outputs[-1].name}.easel-work-", dir=outputs[-1].parent))
        self.state = read_dataset(Path(first.input_folder), first.caption_ext, self._work_dir)
        log.info(f"dataset: {len(self.state.items)} images in {first.input_folder}")
        super().run()

    def cleanup(self) -> None:
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        super().cleanup()
