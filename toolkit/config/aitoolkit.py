"""ai-toolkit's keys while validating: what is dropped (and named), warned about, moved, or refused.

The facts are in ``aitoolkit_keys`` (one table); this module applies them. A block opts in with
``aitoolkit = True`` (its ``block_name`` names its table). A refused key is left in the data wrapped in
``Refused``, so the validator reports it at its own YAML position, with the reason instead of "unknown key".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from toolkit.config.aitoolkit_keys import BLOCKS, IMPLEMENTED, OTHER_ARCH, REFUSED, STATUSES, UNSET, WARNED, Key, Same


@dataclass(frozen=True)
class Refused:
    """A key's value that easel will not accept, with the reason shown in place of "unknown key"."""

    value: Any
    message: str


@functools.lru_cache(maxsize=None)
def table(block: str) -> dict[str, Key]:
    """The ai-toolkit keys of one easel block (``network``, ``datasets[]``, ...), by name."""
    return {key.name: key for key in BLOCKS.get(block, ())}


def accepted_unused(block: str) -> frozenset[str]:
    """The keys of ``block`` that easel accepts without an easel field: all but the implemented ones."""
    return frozenset(name for name, key in table(block).items() if key.status != IMPLEMENTED)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict, tuple)) and not value)


def default_of(block: str, key: Key, data: dict[str, Any]) -> Any:
    """ai-toolkit's default of ``key`` in this block's ``data`` (a ``Same`` default reads the other key)."""
    if not isinstance(key.default, Same):
        return key.default
    other = table(block).get(key.default.key)
    if other is None:
        return None
    return data.get(other.name, other.default)


def is_default(value: Any, default: Any) -> bool:
    """Whether ``value`` is ai-toolkit's default (unset, empty and false count as one)."""
    if _blank(value) or value is False:
        return _blank(default) or default is False
    if isinstance(value, str) and isinstance(default, str):
        return value.strip().lstrip(".").lower() == default.strip().lstrip(".").lower()
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    return bool(value == default)


def _architectures(context: dict[str, Any]) -> str:
    registry = context.get("registry")
    names = sorted({spec.name for spec in registry.archs.values()}) if registry is not None else []
    return ", ".join(names) or "see docs/config.md"


def refusal(key: Key, value: Any, context: dict[str, Any]) -> str:
    """The error for a refused or other-architecture key set to ``value``."""
    if isinstance(key.default, Same):
        fix = f"Remove it (ai-toolkit's default is {key.default.key}'s value)"
    elif _blank(key.default):
        fix = "Remove it"
    else:
        fix = f"Remove it, or set it to {key.default!r} (ai-toolkit's default),"
    if key.status == OTHER_ARCH:
        return (f"{key.name} ({key.meaning}) is for {key.note}, which easel does not train; easel trains {_architectures(context)}. "
                f"{fix.rstrip(',')}.")
    return (f"{key.name} {value!r} asks for an ai-toolkit feature easel does not have ({key.meaning}); ignoring it would "
            f"train a different LoRA than the config asks for. {fix} to train without it.")


def screen(block: str, data: dict[str, Any], context: dict[str, Any] | None) -> dict[str, Any]:
    """Drop the ai-toolkit keys easel does not use (recording them), warn where asked, wrap refused values."""
    keys = table(block)
    if not keys:
        return data
    context = context if context is not None else {}
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = keys.get(name)
        if key is None or isinstance(value, Refused):
            out[name] = value
            continue
        default = (_blank(value) and isinstance(key.default, Same)) or is_default(value, default_of(block, key, data))
        where = f"{block}.{name}"
        if key.status == IMPLEMENTED:
            if _same_as_spelling(key, value, data):
                continue
            if key.note and not default:
                context.setdefault("warnings", []).append(f"{where}: {value!r}: {key.note}")
            out[name] = value
            continue
        if key.status in (REFUSED, OTHER_ARCH) and not default:
            out[name] = Refused(value, refusal(key, value, context))
            continue
        context.setdefault("ignored", []).append(where)
        if key.status == WARNED and not default:
            context.setdefault("warnings", []).append(f"{where}: {value!r} is ignored ({key.meaning}): {key.note}")
    return out


def _same_as_spelling(key: Key, value: Any, data: dict[str, Any]) -> bool:
    """An older spelling written next to the key it spells, with the same value (ai-toolkit reads both)."""
    other = key.easel
    return bool(other) and "." not in other and other in data and is_default(value, data[other])


def moved_keys() -> list[tuple[str, str, str]]:
    """``(block, key, easel path)`` for every key easel reads at another place (``model.compile`` -> ``train.compile``)."""
    found = []
    for block, keys in BLOCKS.items():
        for key in keys:
            if key.status == IMPLEMENTED and key.easel and "." in key.easel and not key.easel.startswith(f"{block}."):
                found.append((block, key.name, key.easel))
    return found


def apply_moves(process: dict[str, Any]) -> dict[str, Any]:
    """A trainer process's keys moved to where easel reads them; set in both places is refused (keep one)."""
    process = dict(process)
    for block, name, target in moved_keys():
        source = process if block == "process[]" else process.get(block)
        head, _, leaf = target.rpartition(".")
        destination = process.get(head) or {}
        if not isinstance(source, dict) or name not in source or not isinstance(destination, dict):
            continue
        value = source[name]
        rest = {k: v for k, v in source.items() if k != name}
        if leaf in destination:
            rest[name] = Refused(value, f"'{name}' is ai-toolkit's place for {target}, which is set too; keep one")
        if block == "process[]":
            process = rest
        else:
            process[block] = rest
        if leaf not in destination:
            process[head] = {**destination, leaf: value}
    return process


def counts() -> dict[str, int]:
    """How many keys have each status."""
    found = {status: 0 for status in STATUSES}
    for keys in BLOCKS.values():
        for key in keys:
            found[key.status] += 1
    return found


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def render_markdown() -> str:
    """docs/aitoolkit_keys.md: every ai-toolkit key with its default, meaning and what easel does."""
    total = counts()
    lines = ["# ai-toolkit keys", "", "Generated by `python -m toolkit.config.docs` from `toolkit/config/aitoolkit_keys.py`; "
             "do not edit by hand.", "",
             f"Every key ai-toolkit's trainer reads (ostris/ai-toolkit 27a03a91), {sum(total.values())} in all: "
             f"{total[IMPLEMENTED]} implemented, {total['ignored'] + total[WARNED]} accepted and ignored (named in one "
             f"warning line; {total[WARNED]} of them warn of their own when not at ai-toolkit's default), "
             f"{total[REFUSED] + total[OTHER_ARCH]} refused unless at ai-toolkit's default ({total[OTHER_ARCH]} of them "
             "belong to architectures easel does not train).", ""]
    for block, keys in BLOCKS.items():
        lines += [f"## {block}", "", "| key | ai-toolkit default | meaning | easel |", "| --- | --- | --- | --- |"]
        for key in keys:
            lines.append(f"| `{key.name}` | `{_cell(repr(key.default))}` | {_cell(key.meaning)} | {_cell(_status_text(key))} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _status_text(key: Key) -> str:
    if key.status == IMPLEMENTED:
        text = f"implemented as `{key.easel}`" if key.easel else "implemented"
        if key.easel_default is not UNSET:
            text += f"; easel's default: `{key.easel_default!r}`"
        return text + (f" ({key.note})" if key.note else "")
    if key.status == WARNED:
        return f"ignored, with a warning when set: {key.note}"
    if key.status == REFUSED:
        return "refused unless at ai-toolkit's default"
    if key.status == OTHER_ARCH:
        return f"only for {key.note}: refused unless at the default"
    return "ignored"
