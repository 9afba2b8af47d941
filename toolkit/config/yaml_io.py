"""Safe YAML/JSON reading that keeps the line and column of every key.

We compose the node tree with ruamel.yaml's safe loader and build plain Python values ourselves,
so no tag can ever construct a Python object, duplicate keys are caught, and each value's
position is recorded in a ``Locations`` map for error messages.

Hostile files fail fast with one clear error: a file over ``MAX_BYTES``, an alias that contains
itself, nesting deeper than ``MAX_DEPTH``, and aliases that expand to more than ``MAX_VALUES``
values (the "billion laughs": each alias repeating the one before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from toolkit.errors import ConfigError, ConfigIssue, Path

_STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}
_MERGE = _STD + "merge"
MAX_BYTES = 4 * 2 ** 20
"""Largest config file read; real configs are a few kilobytes (long prompt lists belong in a prompts file)."""
MAX_VALUES = 100_000
"""Most values a config may expand to, aliases counted once per use."""
MAX_DEPTH = 100
"""Deepest nesting of blocks and lists."""


class _Hostile(Exception):
    """A file that would not finish building (expansion, recursion); ``message`` says which."""

    def __init__(self, node: Any, message: str):
        super().__init__(message)
        self.node = node


@dataclass
class Locations:
    """YAML path -> (line, column), both 1-based; ``source`` is the file name for messages."""

    source: str
    points: dict[Path, tuple[int, int]] = field(default_factory=dict)
    origins: dict[Path, str] = field(default_factory=dict)
    """Paths set from the command line (``--set``), with the flag that set them."""

    def find(self, path: Path) -> tuple[int | None, int | None]:
        """Position of ``path`` or of its nearest ancestor that exists in the file."""
        for end in range(len(path), -1, -1):
            point = self.points.get(tuple(path[:end]))
            if point:
                return point
        return None, None

    def issue(self, path: Path, message: str) -> ConfigIssue:
        for end in range(len(path), 0, -1):
            origin = self.origins.get(tuple(path[:end]))
            if origin:
                return ConfigIssue(tuple(path), f"{message} (from {origin})")
        line, column = self.find(path)
        return ConfigIssue(tuple(path), message, line, column)


def _tag(node: Any) -> str:
    tag = node.tag
    return str(getattr(tag, "value", tag))


class _Builder:
    """Turns composed nodes into dicts/lists/scalars, recording positions and problems."""

    def __init__(self, yaml: Any, locations: Locations):
        self.constructor = yaml.constructor
        self.locations = locations
        self.issues: list[ConfigIssue] = []
        self.values = 0
        self.open: list[int] = []
        """Ids of the nodes being built (the path from the root): an alias back to one of them is a loop."""

    def mark(self, path: Path, node: Any) -> None:
        self.locations.points.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))

    def build(self, node: Any, path: Path) -> Any:
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        self.values += 1
        if self.values > MAX_VALUES:
            raise _Hostile(node, f"the file expands to more than {MAX_VALUES:,} values: aliases (*name) repeat blocks that "
                                 "repeat others (a 'billion laughs'); write the values out")
        tag = _tag(node)
        if isinstance(node, (MappingNode, SequenceNode)):
            if id(node) in self.open:
                raise _Hostile(node, "an alias (*name) refers to a block that contains it, so the value would never end; "
                                     "remove the alias")
            if len(self.open) >= MAX_DEPTH:
                raise _Hostile(node, f"blocks and lists are nested more than {MAX_DEPTH} deep")
            self.open.append(id(node))
            try:
                return self.build_collection(node, path, tag, isinstance(node, MappingNode))
            finally:
                self.open.pop()
        if tag not in _SCALAR_TAGS:
            return self.refuse(node, path, tag)
        if tag == _STD + "timestamp":
            return str(node.value)
        return self.constructor.construct_object(node, deep=True)

    def build_collection(self, node: Any, path: Path, tag: str, mapping: bool) -> Any:
        if tag != _STD + ("map" if mapping else "seq"):
            return self.refuse(node, path, tag)
        if mapping:
            return self.build_map(node, path)
        return [self.build_item(item, path + (i,)) for i, item in enumerate(node.value)]

    def build_item(self, node: Any, path: Path) -> Any:
        self.mark(path, node)
        return self.build(node, path)

    def build_map(self, node: Any, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: list[Any] = []
        for key_node, value_node in node.value:
            if _tag(key_node) == _MERGE:
                built = self.build(value_node, path)
                merged.extend(built if isinstance(built, list) else [built])
                continue
            key = self.build(key_node, path)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                self.issues.append(self.at(key_node, path, "a key must be a plain scalar"))
                continue
            key = str(key)
            if key in result:
                line = self.locations.points.get(path + (key,), (None,))[0]
                self.issues.append(self.at(key_node, path + (key,), f"duplicate key '{key}' (first set on line {line}); keep one"))
                continue
            self.mark(path + (key,), key_node)
            result[key] = self.build(value_node, path + (key,))
        for source in merged:  # `<<: *anchor` fills only the keys not written out
            for k, v in (source.items() if isinstance(source, dict) else ()):
                result.setdefault(k, v)
        return result

    def refuse(self, node: Any, path: Path, tag: str) -> None:
        shown = "!!" + tag.removeprefix(_STD) if tag.startswith(_STD) else tag  # as the user wrote it
        self.issues.append(self.at(node, path, f"the tag '{shown}' is not allowed: configs hold plain data only, and no Python "
                                               "object is ever built from YAML; remove the tag and write the value"))
        return None

    @staticmethod
    def at(node: Any, path: Path, message: str) -> ConfigIssue:
        return ConfigIssue(path, message, node.start_mark.line + 1, node.start_mark.column + 1)


def load_text(text: str, source: str) -> tuple[Any, Locations]:
    """Parse YAML (or JSON) text into plain data and the positions of its keys; any problem raises."""
    data, locations, issues = read_text(text, source)
    if issues:
        raise ConfigError(source, issues)
    return data, locations


def read_text(text: str, source: str) -> tuple[Any, Locations, list[ConfigIssue]]:
    """Like ``load_text``, but problems inside valid YAML (duplicate keys, refused tags) are returned, not raised,
    so that the caller can report them together with the rest of the file's problems.

    A refused tag's value is read as null and a duplicate key keeps its first value. Syntax errors still raise.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="safe", pure=True)
    locations = Locations(source)
    if len(text) > MAX_BYTES:
        raise _too_large(source, len(text))
    try:
        _check_depth(YAML(typ="safe", pure=True), text, source)
        node = yaml.compose(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        raise ConfigError(source, [ConfigIssue((), f"YAML syntax error: {problem}", line, column)],
                          "Fix the YAML syntax at that line (indentation, a missing ':' or quote) and run again.") from None
    except YAMLError as err:
        raise ConfigError(source, [ConfigIssue((), f"YAML syntax error: {err}")]) from None
    if node is None:
        raise ConfigError(source, [ConfigIssue((), "the file is empty")], "Write a config (see config/examples/) and run again.")
    builder = _Builder(yaml, locations)
    builder.mark((), node)
    try:
        data = builder.build(node, ())
    except _Hostile as err:
        raise ConfigError(source, [_Builder.at(err.node, (), str(err))], "Fix that part of the file and run again.") from None
    return data, locations, builder.issues


def _check_depth(yaml: Any, text: str, source: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` from the event stream, before the (recursive) composer meets it."""
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

    depth = 0
    for event in yaml.parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ConfigError(source, [ConfigIssue((), f"blocks and lists are nested more than {MAX_DEPTH} deep",
                                                       mark.line + 1, mark.column + 1)])
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _too_large(source: str, size: int) -> ConfigError:
    return ConfigError(source, [ConfigIssue((), f"the file holds {size:,} bytes; a config may hold at most {MAX_BYTES:,}")],
                       "Move long lists (prompts) into a file the config names, and run again.")


def read_file(path: FsPath) -> tuple[Any, Locations, list[ConfigIssue]]:
    """``read_text`` on a config file; the file name in messages is the path as given."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise _too_large(str(path), size)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), [ConfigIssue((), "the file is not UTF-8 text")], "Save the config as UTF-8 and run again.") from None
    return read_text(text, str(path))
