"""Text substitutions (``${ENV}``, ``[name]``, ``[trigger]``) and ``--set`` overrides on raw config data."""

from __future__ import annotations

import os
import re
import typing
from typing import Any, Callable

from toolkit.config.base import Block
from toolkit.config.yaml_io import Locations, load_text
from toolkit.errors import ConfigError, ConfigIssue, Path, format_path

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _map_strings(data: Any, path: Path, fn: Callable[[str, Path], str]) -> Any:
    if isinstance(data, str):
        return fn(data, path)
    if isinstance(data, dict):
        return {key: _map_strings(value, path + (key,), fn) for key, value in data.items()}
    if isinstance(data, list):
        return [_map_strings(value, path + (i,), fn) for i, value in enumerate(data)]
    return data


def substitute_env(data: Any, locations: Locations, environ: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string; a missing variable is an error."""
    result, issues = expand_env(data, locations, environ)
    if issues:
        raise ConfigError(locations.source, issues)
    return result


def expand_env(data: Any, locations: Locations, environ: dict[str, str] | None = None) -> tuple[Any, list[ConfigIssue]]:
    """``substitute_env`` that returns the missing variables as issues (the text is left as written there)."""
    env = os.environ if environ is None else environ
    issues: list[ConfigIssue] = []

    def replace(text: str, path: Path) -> str:
        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            issues.append(locations.issue(path, f"environment variable '{name}' is not set; export it or write ${{{name}:-default}}"))
            return match.group(0)

        return _ENV.sub(one, text)

    return _map_strings(data, (), replace), issues


def substitute_tags(data: Any, name: str | None) -> Any:
    """Replace ``[name]`` everywhere, and ``[trigger]`` inside each process that sets ``trigger_word``.

    Where no trigger word is set, ``[trigger]`` is left for the dataset's caption rules.
    """
    if name:
        data = _map_strings(data, (), lambda text, _: text.replace("[name]", name))
    processes = data.get("config", {}).get("process") if isinstance(data, dict) and isinstance(data.get("config"), dict) else None
    if isinstance(processes, list):
        for i, process in enumerate(processes):
            trigger = process.get("trigger_word") if isinstance(process, dict) else None
            if isinstance(trigger, str) and trigger:
                processes[i] = _map_strings(process, (), lambda text, _: text.replace("[trigger]", trigger))
    return data


def parse_override(text: str) -> tuple[Path, Any]:
    """``a.b.0.c=value`` -> (("a", "b", 0, "c"), typed value). The value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", [ConfigIssue((), f"'{text}' is not KEY=VALUE (e.g. config.process.0.train.lr=2e-4)")])
    path = tuple(int(part) if part.isdigit() else part for part in key.strip().split("."))
    value = load_text(raw, f"--set {text}")[0] if raw.strip() else ""
    return path, value


def apply_overrides(data: Any, overrides: list[str], locations: Locations) -> Any:
    """Set each ``--set`` value in place; positions of overridden keys point at the flag."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path[:-1]):
            node = _step(node, part, path[: depth + 1], text)
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise _override_error(text, path, f"index {last} is not in the list of {len(node)}")
            node[last] = value
        elif isinstance(node, dict):
            node[str(last)] = value
        else:
            raise _override_error(text, path, f"{format_path(path[:-1])} is a value, not a block")
        locations.origins[path] = f"--set {text}"
    return data


def _step(node: Any, part: str | int, path: Path, text: str) -> Any:
    if isinstance(node, list):
        if not isinstance(part, int) or part >= len(node):
            raise _override_error(text, path, f"index {part} is not in the list of {len(node)} (items are counted from 0)")
        return node[part]
    if isinstance(node, dict):
        key = str(part)
        if key not in node or node[key] is None:
            node[key] = {}
        return node[key]
    raise _override_error(text, path, f"{format_path(path[:-1])} is a value, not a block")


def _override_error(text: str, path: Path, message: str) -> ConfigError:
    return ConfigError("--set", [ConfigIssue(path, message)], f"Check the key path of --set {text} against the config.")


def replace_exclusive(model: type[Block], raw: dict[str, Any], where: Path, locations: Locations) -> list[str]:
    """A ``--set`` of one of a block's ``exclusive_keys`` drops the other one where the file (not --set) gave it.

    ``raw`` is the data of ``model`` at ``where``; returns a note per replaced key. Both keys in the file, or
    both from --set, stay for the validation to report.
    """
    notes = []
    for path, flag in list(locations.origins.items()):
        if path[: len(where)] != where or len(path) <= len(where):
            continue
        parent, key = path[len(where):-1], path[-1]
        block, node = _block_at(model, raw, parent)
        if block is None or not isinstance(node, dict) or node.get(key) is None:
            continue
        for pair in block.exclusive_keys:
            other = pair[1] if key == pair[0] else pair[0] if key == pair[1] else None
            if other is not None and node.get(other) is not None and (*where, *parent, other) not in locations.origins:
                value = node.pop(other)
                notes.append(f"{flag} replaces {format_path((*where, *parent, other))}, which the file set to {value} "
                             f"({key} and {other} exclude each other)")
    return notes


def _block_at(model: type[Block], raw: Any, path: Path) -> tuple[type[Block] | None, Any]:
    """The Block class and the raw data at ``path`` inside ``raw`` (validated as ``model``); (None, None) if none."""
    kind: Any = model
    for part in path:
        if isinstance(part, int):
            if not isinstance(raw, list) or part >= len(raw) or typing.get_origin(kind) is not list:
                return None, None
            kind, raw = typing.get_args(kind)[0], raw[part]
            continue
        field = kind.model_fields.get(part) if isinstance(kind, type) and issubclass(kind, Block) else None
        if field is None or not isinstance(raw, dict):
            return None, None
        kind, raw = _unwrap(field.annotation), raw.get(part)
    return (kind, raw) if isinstance(kind, type) and issubclass(kind, Block) else (None, None)


def _unwrap(annotation: Any) -> Any:
    """A field's Block (or list of Blocks) type with ``| None`` taken off."""
    if typing.get_origin(annotation) is list:
        return annotation
    blocks = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return blocks[0] if len(blocks) == 1 else annotation
