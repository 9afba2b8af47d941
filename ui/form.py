"""The "new job" form as a view on the YAML: each field is one key of the first training process.

``to_yaml`` writes the fields that changed into the YAML text (comments and every other key kept, with
ruamel.yaml's round-trip mode); ``from_yaml`` reads them back. So the form and the raw editor show one config,
and whatever the form does not know stays as the user wrote it. Validation is never done here (see configs.py).
"""

from __future__ import annotations

import io
import typing
from dataclasses import dataclass
from typing import Any

PROCESS = ("config", "process", 0)


@dataclass(frozen=True)
class FormField:
    """One form field and the YAML key it edits."""

    key: str
    path: tuple[str | int, ...]
    kind: str
    """text, int, float, bool, list (comma-separated numbers), lines (one item per line) or choice."""
    label: str
    help: str = ""
    choices: tuple[str, ...] = ()


def literal_values(annotation: Any) -> tuple[str, ...]:
    """The strings of a (possibly Annotated / Optional) Literal type."""
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(value) for value in typing.get_args(annotation))
    for inner in typing.get_args(annotation):
        found = literal_values(inner)
        if found:
            return found
    return ()


def fields(registry: Any) -> list[FormField]:
    """The form's fields; choices come from the registry and the config schema."""
    from toolkit.config.blocks import ModelConfig, TrainConfig

    optimizers = literal_values(TrainConfig.model_fields["optimizer"].annotation)
    qtypes = literal_values(ModelConfig.model_fields["qtype"].annotation)
    p = PROCESS
    return [
        FormField("name", ("config", "name"), "text", "Name", "the run folder and the LoRA file are named after it"),
        FormField("arch", p + ("model", "arch"), "choice", "Architecture", choices=tuple(registry.arch_names())),
        FormField("model", p + ("model", "name_or_path"), "text", "Model", "hub id, folder, single file, or tiny:<arch>"),
        FormField("dataset", p + ("datasets", 0, "folder_path"), "text", "Dataset folder"),
        FormField("trigger", p + ("trigger_word",), "text", "Trigger word", "replaces [trigger] in captions and prompts"),
        FormField("rank", p + ("network", "linear"), "int", "Rank"),
        FormField("alpha", p + ("network", "linear_alpha"), "float", "Alpha"),
        FormField("steps", p + ("train", "steps"), "int", "Steps"),
        FormField("lr", p + ("train", "lr"), "float", "Learning rate"),
        FormField("optimizer", p + ("train", "optimizer"), "choice", "Optimizer", choices=optimizers),
        FormField("batch_size", p + ("train", "batch_size"), "int", "Batch size"),
        FormField("resolution", p + ("datasets", 0, "resolution"), "list", "Resolution(s)", "e.g. 512, 768, 1024"),
        FormField("prompts", p + ("sample", "prompts"), "lines", "Sample prompts", "one per line; [trigger] allowed"),
        FormField("sample_every", p + ("sample", "sample_every"), "int", "Sample every (steps)"),
        FormField("save_every", p + ("save", "save_every"), "int", "Save every (steps)"),
        FormField("device", p + ("device",), "text", "Device", "auto, cpu, cuda, cuda:1, mps"),
        FormField("quantize", p + ("model", "quantize"), "bool", "Quantize the base model"),
        FormField("qtype", p + ("model", "qtype"), "choice", "Quantization type", choices=qtypes),
        FormField("low_vram", p + ("model", "low_vram"), "bool", "Low VRAM"),
    ]


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # long flow lists stay on one line (ruamel's wrapping leaves trailing spaces)
    yaml.indent(mapping=2, sequence=4, offset=2)  # the style of the example configs
    return yaml


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return None
        elif not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _show(field: FormField, value: Any) -> Any:
    """A YAML value as the form shows it."""
    if value is None:
        return False if field.kind == "bool" else ""
    if field.kind == "bool":
        return bool(value)
    if field.kind == "list":
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if field.kind == "lines":
        items = value if isinstance(value, list) else [value]
        return "\n".join(str(item.get("prompt", "")) if isinstance(item, dict) else str(item) for item in items)
    return str(value)


def from_yaml(text: str, form_fields: list[FormField]) -> dict[str, Any]:
    """The form's values in a YAML text; raises ValueError when it does not parse."""
    try:
        data = _yaml().load(text)
    except Exception as err:  # any parser error: the editor shows the loader's own message
        raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    return {field.key: _show(field, _get(data, field.path)) for field in form_fields}


def _parse(field: FormField, raw: Any) -> Any:
    """A form value as YAML (None: remove the key). Numbers that do not parse stay text: the validator names them."""
    text = raw.strip() if isinstance(raw, str) else raw
    if field.kind == "bool":
        return bool(raw) and raw not in ("false", "0", "off")
    if text in ("", None):
        return None
    converters = {"int": int, "float": float}
    if field.kind in converters:
        try:
            return converters[field.kind](text)
        except ValueError:
            return text
    if field.kind == "list":
        parts = [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]
        return [int(part) if part.isdigit() else part for part in parts]
    if field.kind == "lines":
        return [line.strip() for line in str(text).splitlines() if line.strip()]
    return text


def _set(data: Any, path: tuple, value: Any) -> None:
    for position, part in enumerate(path[:-1]):
        following = path[position + 1]
        if isinstance(part, int):
            while len(data) <= part:
                data.append({})
        elif part not in data or data[part] is None:
            data[part] = [] if isinstance(following, int) else {}
        data = data[part]
    last = path[-1]
    if value is None:
        if isinstance(data, dict):
            data.pop(last, None)
    elif isinstance(last, int):
        while len(data) <= last:
            data.append(None)
        data[last] = value
    else:
        data[last] = value


def to_yaml(values: dict[str, Any], text: str, form_fields: list[FormField]) -> str:
    """``text`` with the form's changed fields written in; raises ValueError when ``text`` does not parse."""
    yaml = _yaml()
    try:
        data = yaml.load(text) if text.strip() else {}
    except Exception as err:  # the editor shows the loader's own message
        raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    if not isinstance(data, dict):
        raise ValueError("the YAML is not a block of keys (job:, config:, ...)")
    before = {field.key: _show(field, _get(data, field.path)) for field in form_fields}
    changed = False
    for field in form_fields:
        if field.key not in values and field.kind != "bool":
            continue
        raw = values.get(field.key, False)
        if _parse(field, raw) == _parse(field, before[field.key]):
            continue  # unchanged: keep the YAML's own spelling (and dict prompts)
        _set(data, field.path, _parse(field, raw))
        changed = True
    if not changed:
        return text  # not a byte moved
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


def set_keys(text: str, values: dict[tuple, Any]) -> str:
    """``text`` with each YAML path set to its value (comments and other keys kept)."""
    yaml = _yaml()
    data = yaml.load(text)
    for path, value in values.items():
        _set(data, path, value)
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()
