"""Turn Pydantic validation errors into short messages with a YAML position and a suggestion."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError

from toolkit.config.aitoolkit import Refused
from toolkit.config.yaml_io import Locations
from toolkit.errors import ConfigIssue, Path

_KIND = {
    "int": "a whole number", "float": "a number", "bool": "true or false", "string": "text",
    "list": "a list", "dict": "a block of keys", "model": "a block of keys", "model_attributes": "a block of keys",
}
_BOUND = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional / Union / Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> Any:
    for candidate in _unwrap(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and isinstance(part, str):
            for name, info in candidate.model_fields.items():
                if part == name or part in _aliases(info):
                    return info.annotation
        origin = typing.get_origin(candidate)
        if origin in (list, tuple) and isinstance(part, int):
            return typing.get_args(candidate)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(candidate)[1]
    return None


def _aliases(info: Any) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [alias] if isinstance(alias, str) else []


def keys_at(model: type[BaseModel], loc: Path) -> list[str]:
    """The keys a config accepts at ``loc`` (field names and their accepted spellings)."""
    keys: list[str] = []
    for candidate in _blocks_at(model, loc):
        for name, info in candidate.model_fields.items():
            keys += [name, *_aliases(info)]
        keys += sorted(getattr(candidate, "ignored_keys", ()))
    return list(dict.fromkeys(keys))


def _blocks_at(model: type[BaseModel], loc: Path) -> list[type[BaseModel]]:
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    return [c for c in _unwrap(annotation) if isinstance(c, type) and issubclass(c, BaseModel)]


def _other_spellings(model: type[BaseModel], loc: Path, key: str) -> list[str]:
    """The other accepted spellings of the field ``key`` spells at ``loc`` (``rank`` -> ``linear``), if any."""
    for candidate in _blocks_at(model, loc):
        for name, info in candidate.model_fields.items():
            spellings = [*_aliases(info), name]
            if key in spellings:
                return [s for s in dict.fromkeys(spellings) if s != key]
    return []


def _closest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: list[str]) -> str:
    close = _closest(word, choices)
    return f"; did you mean '{close}'?" if close else ""


def _message(error: dict[str, Any], model: type[BaseModel], loc: Path) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden" and isinstance(value, Refused):
        return value.message
    if kind == "extra_forbidden":
        # With two spellings of one key written, Pydantic reads one and calls the other unknown.
        others = _other_spellings(model, loc[:-1], str(loc[-1]))
        if others:
            return f"'{loc[-1]}' is another spelling of {' / '.join(repr(o) for o in others)}, which is also set; keep one"
        valid = keys_at(model, loc[:-1])
        hint = suggest(str(loc[-1]), valid)
        return f"unknown key '{loc[-1]}'" + (hint or f". Valid keys here: {', '.join(valid)}.")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "literal_error":
        valid = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"unknown value {value!r}{suggest(str(value), valid) or '.'} Valid: {', '.join(valid)}."
    if kind in _BOUND:
        name, sign = _BOUND[kind]
        bound = ctx.get(name)
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"must be {sign} {bound}, got {value!r}"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')}, got {value!r}"
    if kind == "int_from_float":
        return f"expected a whole number, got {value!r}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length', 0)}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    prefix = kind.split("_")[0] if kind.endswith(("_parsing", "_type")) else ""
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        prefix = "dict"
    if prefix in _KIND:
        return f"expected {_KIND[prefix]}, got {value!r}"
    message = str(error.get("msg", kind))
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def issues_from(err: ValidationError, model: type[BaseModel], base: Path, locations: Locations) -> list[ConfigIssue]:
    """One ConfigIssue per Pydantic error, positioned at ``base + loc``.

    A required key reported missing where a misspelt key suggests it (``promt`` -> ``prompt``) is left out:
    the "did you mean" line already says what to do.
    """
    errors = []
    for error in err.errors():
        loc = tuple(part for part in error["loc"] if isinstance(part, int) or not str(part).startswith(("function-", "literal[")))
        errors.append((loc, error))
    suggested = set()
    for loc, error in errors:
        if error["type"] == "extra_forbidden" and loc:
            close = _closest(str(loc[-1]), keys_at(model, loc[:-1]))
            if close:
                suggested.add(loc[:-1] + (close,))
    return [locations.issue(base + loc, _message(error, model, loc)) for loc, error in errors
            if not (error["type"] == "missing" and loc in suggested)]
