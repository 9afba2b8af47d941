"""The top level of a config file (job / config.name / config.process[] / meta) and its loading."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from toolkit.config.base import Block
from toolkit.config.blocks import MetaConfig
from toolkit.config.messages import issues_from, suggest
from toolkit.config.substitute import apply_overrides, expand_env, replace_exclusive, substitute_tags
from toolkit.config.yaml_io import Locations, read_file
from toolkit.errors import ConfigError, ConfigIssue, EaselError
from toolkit.paths import segment_problem
from toolkit.registry import JobSpec, ProcessSpec, Registry, RegistryError, load_object


class JobBody(Block):
    """The ``config:`` block."""

    block_name: ClassVar[str] = "config"

    name: str = Field(min_length=1)
    """Name of the run: the output folder and the saved files are named after it, so it is one plain name (no ``/``, not ``.`` or ``..``)."""
    process: list[dict[str, Any]] = Field(min_length=1)
    """The steps of the job, run in order; each one's ``type`` picks its schema."""

    @field_validator("name")
    @classmethod
    def _one_segment(cls, value: str) -> str:
        problem = segment_problem(value)
        if problem:
            raise ValueError(f"'{value}' {problem}; the run's folder and saved files are named after it, so it must be "
                             "one plain name, such as my_lora")
        return value


class JobFile(Block):
    """A whole config file."""

    job: str
    """Job kind: extension (training), generate, caption, dataset, evaluate or convert."""
    config: JobBody
    """The job's name and processes."""
    meta: MetaConfig = MetaConfig()
    """Free-form facts copied into saved files' metadata."""


@dataclass
class LoadedJob:
    """A validated config, ready to build a job from."""

    source: FsPath
    name: str
    spec: JobSpec
    processes: list[BaseModel]
    process_specs: list[ProcessSpec]
    meta: MetaConfig
    resolved: dict[str, Any]
    """The config after substitutions and overrides (written to the run folder as config.yaml)."""
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """ai-toolkit settings read with a caveat, or ignored although set: one line each."""
    notes: list[str] = field(default_factory=list)
    """What loading changed beyond the plain overrides (a ``--set`` of steps replacing the file's epochs)."""
    locations: Locations | None = None
    """Where each key sits in the file, for errors found after validation (a missing folder, ...)."""
    body: BaseModel | None = None
    """The validated ``config:`` block (a JobBody, or the job kind's own schema)."""


def load_job_config(path: FsPath, registry: Registry, *, name: str | None = None, overrides: list[str] = ()) -> LoadedJob:
    """Read, substitute, override and validate one config file. Raises ConfigError with every problem.

    Problems found while reading (duplicate keys, refused tags, unset variables, a missing --name) are
    reported together with the validation's, so one run shows everything that is wrong in the file.
    """
    data, locations, issues = read_file(path)
    data, env_issues = expand_env(data, locations)
    issues += env_issues
    data = apply_overrides(data, list(overrides), locations)
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        config_name = data["config"].get("name")
        name = name or (config_name if isinstance(config_name, str) and "[name]" not in config_name else None)
        if name is None and isinstance(config_name, str):
            issues.append(locations.issue(("config", "name"), "uses [name] but no --name was given; pass --name NAME"))
    data = substitute_tags(data, name)
    try:
        loaded = validate_job(data, locations, registry, path)
    except ConfigError as err:
        raise ConfigError(locations.source, _merge(issues, err.issues)) from None
    if issues:
        raise ConfigError(locations.source, _merge(issues, []))
    return loaded


def _merge(early: list[ConfigIssue], late: list[ConfigIssue]) -> list[ConfigIssue]:
    """Early issues (from reading) plus the validation's, minus those at a path already reported (a refused
    tag reads as null, an unset variable stays ``${VAR}``: their validation errors only repeat the first).
    In file order; issues without a line (from --set) last."""
    reported = {issue.path for issue in early}
    fresh = [issue for issue in late if issue.path not in reported]
    return sorted(early + fresh, key=lambda issue: (issue.line is None, issue.line or 0, issue.column or 0))


def validate_job(data: Any, locations: Locations, registry: Registry, path: FsPath) -> LoadedJob:
    """Validate the top level and each process against its registered type; report all problems together."""
    context: dict[str, Any] = {"registry": registry, "ignored": [], "warnings": [], "notes": []}
    if not isinstance(data, dict):
        raise ConfigError(locations.source, [locations.issue((), "the file must be a block of keys (job:, config:, ...)")])
    issues: list[ConfigIssue] = []
    spec = None
    if isinstance(data.get("job"), str):
        try:
            spec = registry.job(data["job"])
        except RegistryError as err:
            issues.append(locations.issue(("job",), str(err)))
    top = None
    model = job_file_model(spec.body if spec is not None else "")
    try:
        top = model.model_validate(data, context=context)
    except ValidationError as err:
        issues = issues_from(err, model, (), locations) + issues
    raw_processes = data.get("config", {}).get("process") if isinstance(data.get("config"), dict) else None
    processes: list[BaseModel] = []
    specs: list[ProcessSpec] = []
    if spec is not None and isinstance(raw_processes, list):
        for index, raw in enumerate(raw_processes):
            if not isinstance(raw, dict):
                continue  # already reported by the top-level validation
            validated = _validate_process(raw, spec.name, registry, context, locations, ("config", "process", index), issues)
            if validated is not None:
                processes.append(validated[0])
                specs.append(validated[1])
    if issues or top is None or spec is None:
        raise ConfigError(locations.source, issues)
    return LoadedJob(path, top.config.name, spec, processes, specs, top.meta, copy.deepcopy(data), sorted(set(context["ignored"])),
                     list(dict.fromkeys(context["warnings"])), context["notes"], locations, top.config)


@functools.lru_cache(maxsize=None)
def job_file_model(body: str) -> type[JobFile]:
    """The whole-file schema of a job kind whose ``config:`` block has its own schema (``JobSpec.body``)."""
    if not body:
        return JobFile
    body_class = load_object(body)
    return create_model(f"{body_class.__name__}File", __base__=JobFile, config=(body_class, ...))


def _validate_process(raw: dict[str, Any], job: str, registry: Registry, context: dict[str, Any],
                      locations: Locations, where: tuple, issues: list[ConfigIssue]) -> tuple[BaseModel, ProcessSpec] | None:
    kind = raw.get("type")
    if not isinstance(kind, str):
        known = sorted(p for (j, p) in registry.processes if j == job)
        issues.append(locations.issue(where + ("type",), f"each process needs a 'type'; for job '{job}' one of: {', '.join(known)}"))
        return None
    try:
        spec = registry.process(job, kind)
    except RegistryError as err:
        issues.append(locations.issue(where + ("type",), str(err)))
        return None
    model: type[BaseModel] = load_object(spec.config)
    if issubclass(model, Block):
        context["notes"].extend(replace_exclusive(model, raw, where, locations))
    try:
        config = model.model_validate({**raw, "type": spec.name}, context=context)
    except ValidationError as err:
        issues.extend(issues_from(err, model, where, locations))
        return None
    check = getattr(config, "check", None)
    problems = check(registry) if callable(check) else []
    issues.extend(locations.issue(where + tuple(rel), message) for rel, message in problems)
    return (config, spec) if not problems else None


def find_config(name: str, root: FsPath) -> FsPath:
    """A config path as given, or under ``config/`` (and ``config/examples/``) with .yaml/.yml/.json added."""
    given = FsPath(name)
    names = [given] + [given.with_name(given.name + ext) for ext in (".yaml", ".yml", ".json")]
    candidates = list(names)
    if not given.is_absolute():
        candidates += [root / folder / n for folder in ("config", "config/examples") for n in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(str(p.relative_to(root)) for p in (root / "config").rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    raise EaselError(f"config '{name}' not found (looked for {', '.join(str(n) for n in names)} here and under config/)"
                     f"{suggest(str(name), known) or '.'} Give the path of a .yaml or .json file; the examples are in config/examples/.")
