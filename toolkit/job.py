"""Base classes of jobs and processes. A job runs its processes in order; ``plan`` is the dry run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, ConfigIssue
from toolkit.registry import Registry, load_object

if TYPE_CHECKING:
    from toolkit.config.job import LoadedJob


@dataclass(frozen=True)
class RunOptions:
    """Command-line switches a job may need."""

    dry_run: bool = False
    debug: bool = False


class Process(ABC):
    """One ``config.process[]`` entry. Subclasses import heavy libraries inside ``run`` only."""

    def __init__(self, job: "Job", config: Any, index: int):
        self.job = job
        self.config = config
        self.index = index

    def config_error(self, where: tuple, message: str, hint: str = "") -> ConfigError:
        """A ConfigError at ``where`` (a path inside this process's block), with the file's line and column."""
        path = ("config", "process", self.index, *where)
        locations = self.job.loaded.locations
        issue = locations.issue(path, message) if locations is not None else ConfigIssue(path, message)
        return ConfigError(str(self.job.loaded.source), [issue], hint or "Fix the path in the config (or create it) and run again.")

    @staticmethod
    def raise_together(errors: list[ConfigError]) -> None:
        """Raise the ``config_error``s one check found (a missing file each) as one error, if there are any."""
        if errors:
            raise ConfigError.combine(errors[0].source, errors)

    def plan(self) -> list[str]:
        """Lines describing what ``run`` would do; must not load any model."""
        return [f"process {self.index}: {self.config.type}"]

    @abstractmethod
    def run(self) -> None:
        """Do the work."""

    def cleanup(self) -> None:
        """Release what ``run`` held (also called after a failure)."""


class Job:
    """Runs the processes of one config. Job kinds subclass it for shared setup."""

    def __init__(self, loaded: "LoadedJob", registry: Registry, options: RunOptions = RunOptions()):
        self.loaded = loaded
        self.registry = registry
        self.options = options
        self.name = loaded.name
        self.processes: list[Process] = [
            load_object(spec.runner)(self, config, index)
            for index, (spec, config) in enumerate(zip(loaded.process_specs, loaded.processes))
        ]

    def plan(self) -> str:
        """The dry run's report. Every process is checked, and their problems (missing files) are raised together."""
        lines = [f"job: {self.loaded.spec.name} ({self.name}) from {self.loaded.source}"]
        errors = []
        for process in self.processes:
            try:
                lines += ["", *process.plan()]
            except ConfigError as err:
                errors.append(err)
        if errors:
            raise ConfigError.combine(str(self.loaded.source), errors)
        return "\n".join(lines)

    def run(self) -> None:
        for process in self.processes:
            process.run()

    def cleanup(self) -> None:
        for process in self.processes:
            process.cleanup()
