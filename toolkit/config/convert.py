"""Configs of the LoRA tools (``job: convert``): convert, merge, resize and inspect processes."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from toolkit.config.base import Block, Precision, lowercase
from toolkit.config.blocks import LoraFormat, LoraRef, ModelConfig


def _arch_problem(registry: Any, arch: str | None) -> list[tuple[tuple, str]]:
    if arch is None:
        return []
    try:
        registry.arch(arch)
    except LookupError as err:
        return [(("arch",), str(err))]
    return []


class ConvertProcessConfig(Block):
    """Rewrite a LoRA file in another key layout (kohya, comfy, diffusers, peft)."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["convert"]
    """Process type."""
    input: str
    """The LoRA file to read (any supported layout: kohya, ComfyUI/ai-toolkit, diffusers/PEFT, OneTrainer, LyCORIS)."""
    output: str
    """The .safetensors file to write."""
    format: LoraFormat | None = None
    """Layout to write: kohya (A1111, ComfyUI), comfy, diffusers or peft. Default: the architecture's."""
    arch: str | None = None
    """Architecture whose naming applies (sd15, sdxl, zimage); default: read from the file's metadata or guessed from its keys."""
    dtype: Precision | None = None
    """Precision of the written tensors; default: as read."""
    model: ModelConfig | None = None
    """Optional base model: names are resolved against it exactly and every module must exist in it."""
    device: str = "cpu"
    """Where the base model is loaded (when ``model`` is given)."""
    report_file: str | None = None
    """Also write every key mapping (file name -> canonical name -> written name) to this text file."""

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        return _arch_problem(registry, self.arch)


class MergeProcessConfig(Block):
    """Bake LoRAs into a base model, or merge several LoRAs into one."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["merge"]
    """Process type."""
    loras: list[LoraRef] = Field(min_length=1)
    """The LoRAs and their weights."""
    mode: lowercase(Literal["model", "concat", "svd"]) = "model"  # type: ignore[valid-type]
    """model: bake into the base model; concat: one LoRA with the ranks stacked (exact); svd: one LoRA re-factorised to ``rank``."""
    output: str
    """model mode: a folder (save_as: diffusers) or a .safetensors file (save_as: single_file); else the LoRA file to write."""
    model: ModelConfig | None = None
    """The base model (needed by mode: model; optional otherwise, to resolve names and LoHa/LoKr kernel shapes)."""
    save_as: lowercase(Literal["diffusers", "single_file"]) = "diffusers"  # type: ignore[valid-type]
    """mode model: a diffusers folder (pipeline.save_pretrained) or one single-file checkpoint in the original layout."""
    rank: int | None = Field(None, ge=1)
    """mode svd: the rank of the merged LoRA (at most)."""
    sv_ratio: float | None = Field(None, gt=1)
    """mode svd: keep singular values at least max / sv_ratio."""
    energy: float | None = Field(None, gt=0, le=1)
    """mode svd: keep the fewest singular values holding this fraction of the update's energy."""
    format: LoraFormat | None = None
    """concat / svd: layout of the written LoRA; default: the architecture's."""
    arch: str | None = None
    """concat / svd: architecture of the LoRAs when the files do not say."""
    name: str | None = None
    """Name recorded in the merged LoRA's metadata; default: the output file's stem."""
    dtype: Precision | None = None
    """Precision of what is written; default: as computed (model mode: the model's dtype, fp32 unless model.dtype)."""
    device: str = "auto"
    """Where the base model is loaded."""

    @model_validator(mode="after")
    def _mode_needs(self) -> "MergeProcessConfig":
        if self.mode == "model" and self.model is None:
            raise ValueError("mode: model needs a `model:` block (the base model to bake the LoRAs into)")
        if self.mode == "svd" and self.rank is None and self.sv_ratio is None and self.energy is None:
            raise ValueError("mode: svd needs rank, sv_ratio or energy")
        return self

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        return _arch_problem(registry, self.arch)


class ResizeProcessConfig(Block):
    """Reduce a LoRA's rank by SVD, reporting the energy kept."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["resize"]
    """Process type."""
    input: str
    """The LoRA file to resize."""
    output: str
    """The .safetensors file to write."""
    rank: int | None = Field(None, ge=1)
    """New rank (at most) of every module."""
    sv_ratio: float | None = Field(None, gt=1)
    """Keep singular values at least max / sv_ratio (a per-module rank)."""
    energy: float | None = Field(None, gt=0, le=1)
    """Keep the fewest singular values holding this fraction of each module's energy (e.g. 0.99)."""
    format: LoraFormat | None = None
    """Layout to write; default: the input's when it is one easel writes, else the architecture's."""
    arch: str | None = None
    """Architecture when the file does not say."""
    dtype: Precision | None = None
    """Precision of the written tensors; default: as read."""
    model: ModelConfig | None = None
    """Optional base model: resolves names exactly and gives LoHa/LoKr convolutions their kernel shape."""
    device: str = "cpu"
    """Where the base model is loaded (when ``model`` is given)."""

    @model_validator(mode="after")
    def _one_rule(self) -> "ResizeProcessConfig":
        if self.rank is None and self.sv_ratio is None and self.energy is None:
            raise ValueError("give rank, sv_ratio or energy")
        return self

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        return _arch_problem(registry, self.arch)


class InspectProcessConfig(Block):
    """Print what a LoRA file holds: architecture, format, ranks and alphas, metadata, trigger words."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["inspect"]
    """Process type."""
    input: str | list[str]
    """A LoRA file, a folder of them, or a list of either."""
    arch: str | None = None
    """Architecture when the files do not say (otherwise guessed)."""
    show_keys: bool = False
    """Also list every module with its type, rank and alpha."""
    output_file: str | None = None
    """Also write the report as JSON to this file."""

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        return _arch_problem(registry, self.arch)
