"""Prompt lines with inline flags (sd-scripts / ai-toolkit) and A1111 ``<lora:name:weight>`` tags.

``a photo of a cat <lora:watercolor:0.6> --n blurry, text --w 768 --h 512 --seed 42 --cfg 6 --steps 20``
gives the prompt "a photo of a cat", negative "blurry, text", 768x512, seed 42, guidance 6, 20
steps, and the LoRA ``watercolor`` at weight 0.6. A flag's value runs until the next `` --``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from toolkit.errors import EaselError

LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
"""A1111's extra-network syntax; a third field (A1111's separate text-encoder weight) is accepted and ignored."""

_FLAGS: dict[str, tuple[str, type]] = {
    "n": ("negative", str), "w": ("width", int), "h": ("height", int), "d": ("seed", int), "seed": ("seed", int),
    "l": ("guidance_scale", float), "cfg": ("guidance_scale", float), "s": ("steps", int), "steps": ("steps", int),
    "gr": ("guidance_rescale", float), "p2": ("prompt_2", str), "n2": ("negative_2", str),
}


@dataclass
class PromptSpec:
    """One prompt line, parsed. ``None`` means: use the config's default."""

    prompt: str
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    guidance_scale: float | None = None
    steps: int | None = None
    loras: list[tuple[str, float]] = field(default_factory=list)
    """``<lora:name:weight>`` tags found in the line (prompt and negative), in order."""
    guidance_rescale: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    """Architecture-specific values (``prompt_2`` / ``negative_2`` from --p2 / --n2, for SDXL)."""
    source: str = ""
    """The line as written (tags included), for image metadata."""


def _take_loras(text: str, loras: list[tuple[str, float]]) -> str:
    def collect(match: re.Match[str]) -> str:
        name, weight = match.group(1).strip(), (match.group(2) or "").strip()
        try:
            loras.append((name, float(weight) if weight else 1.0))
        except ValueError:
            raise EaselError(f"prompt: '{match.group(0)}' has weight '{weight}', which is not a number "
                             "(write it like <lora:name:0.6>).") from None
        return " "
    text = LORA_TAG.sub(collect, text)
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+([,.;])", r"\1", text).strip().strip(",").strip()


def _flag_value(name: str, raw: str, kind: type, line: str) -> Any:
    if kind is str:
        return raw.strip()
    try:
        return kind(raw.strip())
    except ValueError:
        raise EaselError(f"prompt '{line}': --{name} needs {'a whole number' if kind is int else 'a number'}, got '{raw.strip()}'.") from None


def parse_prompt(text: str) -> PromptSpec:
    """Split a prompt line into the prompt, its inline flags and its LoRA tags."""
    loras: list[tuple[str, float]] = []
    head, *flags = re.split(r"(?:^|\s)--(?=[A-Za-z])", text.strip())
    spec = PromptSpec(prompt=_take_loras(head, loras), source=text.strip())
    values: dict[str, Any] = {}
    for flag in flags:
        name, _, raw = flag.partition(" ")
        name = name.lower()
        if name not in _FLAGS:
            known = ", ".join(f"--{k}" for k in _FLAGS)
            raise EaselError(f"prompt '{text.strip()}': unknown flag --{name}. Known flags: {known}.")
        field_name, kind = _FLAGS[name]
        if kind is str:
            raw = _take_loras(raw, loras)
        values[field_name] = _flag_value(name, raw, kind, text.strip())
    extras = {key: values.pop(key) for key in ("prompt_2", "negative_2") if key in values}
    if "negative_2" in extras:
        extras["negative_prompt_2"] = extras.pop("negative_2")
    return replace(spec, loras=loras, extras=extras, **values)


def read_prompts(source: list[str] | str) -> list[str]:
    """The prompt lines of a list, or of a text file (one per line; blank lines and ``#`` comments skipped)."""
    return [line for _, line in numbered_prompts(source)]


def numbered_prompts(source: list[str] | str) -> list[tuple[int, str]]:
    """``read_prompts`` with where each line came from: its index in the list, or its 1-based line in the file."""
    from pathlib import Path

    if isinstance(source, list):
        return [(index, p) for index, p in enumerate(source) if p.strip()]
    path = Path(source).expanduser()
    if not path.is_file():
        raise EaselError(f"generate.prompts: '{source}' is not a file. Give a list of prompts or a text file with one per line.")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
