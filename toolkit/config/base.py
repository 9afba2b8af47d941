"""The base every config block derives from, and small shared field types."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo, model_validator

from toolkit.config.aitoolkit import Refused, accepted_unused, screen


class Block(BaseModel):
    """A config block: unknown keys are errors; each field's docstring is its description.

    With ``aitoolkit = True`` the block reads ai-toolkit's keys as its table (``toolkit/config/aitoolkit_keys.py``,
    by ``block_name``) says: those easel does not use are dropped and named in one warning line (some with a
    warning of their own), and a value easel cannot honour is an error at its key. ``ignored_keys`` are the keys
    dropped: the table's, plus any a block lists itself.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    block_name: ClassVar[str] = ""
    aitoolkit: ClassVar[bool] = False
    ignored_keys: ClassVar[frozenset[str]] = frozenset()
    exclusive_keys: ClassVar[tuple[tuple[str, str], ...]] = ()
    """Pairs of keys a config sets at most one of; a ``--set`` of one replaces the other where the file set it."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.aitoolkit:
            cls.ignored_keys = frozenset(cls.__dict__.get("ignored_keys", ())) | accepted_unused(cls.block_name)

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored_keys(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not cls.ignored_keys:
            return data
        if cls.aitoolkit:
            data = screen(cls.block_name, data, info.context)
        found = [key for key in data if key in cls.ignored_keys and not _refused(data[key])]
        if info.context is not None and found:
            sink = info.context.setdefault("ignored", [])
            sink.extend(f"{cls.block_name}.{key}" if cls.block_name else key for key in found)
        return {key: value for key, value in data.items() if key not in cls.ignored_keys or _refused(value)}


def _refused(value: Any) -> bool:
    return isinstance(value, Refused)


_PRECISION_ALIASES = {
    "float32": "fp32", "float": "fp32", "full": "fp32", "fp32": "fp32",
    "float16": "fp16", "half": "fp16", "fp16": "fp16",
    "bfloat16": "bf16", "bf16": "bf16",
}


def _normalize_precision(value: Any) -> Any:
    if isinstance(value, str):
        return _PRECISION_ALIASES.get(value.strip().lower(), value)
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Precision = Annotated[Literal["fp32", "fp16", "bf16"], BeforeValidator(_normalize_precision)]
"""A floating point precision; float32/float16/bfloat16 spellings are accepted."""


def lowercase(values: type) -> Any:
    """A Literal type whose input is lower-cased first (``AdamW8bit`` -> ``adamw8bit``)."""
    return Annotated[values, BeforeValidator(_lower)]


def _caption_ext(value: str) -> str:
    value = value.strip().lstrip(".")
    if not value or "/" in value or "\\" in value:
        raise ValueError(f"must be a file extension like txt, got {value!r}")
    return value


CaptionExt = Annotated[str, AfterValidator(_caption_ext)]
"""A caption file extension; a leading dot is dropped (``.txt`` -> ``txt``)."""
