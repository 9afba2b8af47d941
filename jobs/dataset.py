"""``job: dataset``: prepare an image folder for training, step by step, without touching it.

The processes run in the order listed. The first reads ``input_folder`` (images with .txt sidecars,
metadata.jsonl or metadata.csv captions); each later one works on the previous one's result (in
memory; rewritten images go to a work folder beside the output); a process with ``output_folder``
writes the result so far there: the kept images (copied byte for byte unless resized), their
captions and ``report.json`` (every input image, kept or dropped, with the reason). The last
process must write. A printed table repeats the report. A step that drops every image (or an input
with none) stops the job before anything is written: exit 2, naming the settings that dropped them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar

from toolkit.data.images import IMAGE_EXTENSIONS
from toolkit.errors import ConfigError, ConfigIssue
from toolkit.job import Job, Process
from toolkit.log import log
from toolkit.prep import steps
from toolkit.prep.pipeline import DatasetState, Dropped, check_folders, format_report, list_images, read_dataset, write_dataset

NOTHING_WRITTEN = ("Nothing was written. Loosen or remove the settings named above (docs/config.md says what each "
                   "measures), or use other images, and run again.")


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
        before, dropped = len(state.items), len(state.dropped)
        type(self).apply(state, self.config, self.label)
        state.steps.append(self.label)
        log.info(f"{self.label}: {before} -> {len(state.items)} images")
        if before and not state.items:
            raise self.nothing_left(f"{self.label} dropped all {before} images", state.dropped[dropped:])
        if self.config.output_folder:
            report = write_dataset(state, Path(self.config.output_folder), self.config.caption_ext)
            log.info(f"wrote {self.config.output_folder}\n{format_report(report)}")

    def nothing_left(self, what: str, dropped: list[Dropped], where: tuple[str, ...] = ()) -> ConfigError:
        """The error for a dataset left empty: per reason its count and an example, at the line of the setting behind
        it (else at ``where`` in this process)."""
        groups: dict[tuple[str, str | None], list[Dropped]] = {}
        for drop in dropped:
            groups.setdefault((drop.reason, drop.option), []).append(drop)
        errors = []
        for (reason, option), drops in groups.items():
            example = drops[0].item.name + (f": {drops[0].detail}" if drops[0].detail else "")
            change = f"; change or remove {option} (now {getattr(self.config, option)})" if option else ""
            errors.append(self.config_error((option,) if option else where, f"{what}: {len(drops)} {reason} (e.g. {example}){change}",
                                            NOTHING_WRITTEN))
        if not errors:
            errors.append(self.config_error(("input_folder",), f"{what}: it holds no {'/'.join(IMAGE_EXTENSIONS)} files "
                                            "(hidden and cache folders are not read)", "Put images in it and run again."))
        return ConfigError.combine(errors[0].source, errors)


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
        if not self.state.items:
            raise self.processes[0].nothing_left(f"the input folder '{first.input_folder}' has no usable images",  # type: ignore[attr-defined]
                                                 self.state.dropped, ("input_folder",))
        super().run()

    def cleanup(self) -> None:
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        super().cleanup()
