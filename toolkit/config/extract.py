"""Configs of ``job: extract`` (a LoRA from the difference of two checkpoints) and ``job: mod`` (rescale a LoRA),
in ai-toolkit's schema: the two models sit in the ``config:`` block, each process writes one LoRA."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from toolkit.config.base import Block, Precision, lowercase
from toolkit.config.blocks import LoraFormat
from toolkit.config.job import JobBody


def _no_sd2(value: bool, info: ValidationInfo) -> bool:
    if value:
        registry = (info.context or {}).get("registry")
        names = ", ".join(sorted({spec.name for spec in registry.archs.values()})) if registry is not None else "see docs"
        raise ValueError(f"is_v2 selects Stable Diffusion 2.x, which easel does not have; easel has {names}. Set `arch`.")
    return value


NotSD2 = Annotated[bool, AfterValidator(_no_sd2)]


class ExtractJobBody(JobBody):
    """The ``config:`` block of an extract job: the base and the fine-tuned model the LoRAs are taken from."""

    base_model: str
    """The model before fine-tuning: a hub id, a diffusers folder or a single-file checkpoint."""
    extract_model: str
    """The fine-tuned model, in any of those forms and of the same architecture."""
    output_folder: str
    """Folder the processes' ``filename`` is written to."""
    arch: str | None = None
    """Architecture of both models (sd15, sdxl, zimage). Default: SD 1.x, the one ai-toolkit's extract reads."""
    is_v2: NotSD2 = False
    """ai-toolkit's Stable Diffusion 2.x switch; only false is accepted."""
    dtype: Precision = "fp16"
    """Precision of the written LoRAs (a process may override it)."""
    device: str = "cpu"
    """Where the models are compared: cpu, cuda, cuda:N, mps or auto."""
    extract_unet: bool = True
    """Take LoRA modules from the denoiser (UNet or transformer)."""
    extract_text_encoder: bool = True
    """Take LoRA modules from the text encoder(s)."""

    @model_validator(mode="after")
    def _default_arch(self, info: ValidationInfo) -> "ExtractJobBody":
        registry = (info.context or {}).get("registry")
        if self.arch is None and registry is not None:
            self.arch = registry.legacy_default_arch()
        if self.arch is not None and registry is not None:
            try:
                self.arch = registry.arch(self.arch).name
            except LookupError as err:
                raise ValueError(str(err)) from None
        return self


class ExtractProcessConfig(Block):
    """One LoRA taken from the difference of the job's two models by truncated SVD of each layer's weight change."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["lora", "locon"]
    """lora: linear layers (and 1x1 convolutions); locon: 3x3 convolutions too (at rank ``conv``)."""
    filename: str | None = None
    """File name inside the job's ``output_folder``."""
    output_path: str | None = None
    """Full path of the file instead (wins over ``filename``)."""
    mode: lowercase(Literal["fixed", "threshold", "ratio", "quantile"]) = "fixed"  # type: ignore[valid-type]
    """How each layer's rank is picked from its singular values s: fixed (``linear`` / ``conv`` is the rank), threshold
    (keep s > value), ratio (keep s > value * max s) or quantile (the fewest whose running sum stays under value * sum s)."""
    linear: float | None = None
    """Rank (fixed) or the mode's value for linear layers; default 4 (fixed) or 0.5."""
    conv: float | None = None
    """Rank (fixed) or the mode's value for 3x3 convolutions (locon); default: as ``linear``."""
    dtype: Precision | None = None
    """Precision of this file; default the job's ``dtype``."""
    extract_unet: bool | None = None
    """Override the job's ``extract_unet``."""
    extract_text_encoder: bool | None = None
    """Override the job's ``extract_text_encoder``."""
    format: LoraFormat | None = None
    """Key layout of the file; default the architecture's."""
    min_diff: float = Field(1e-6, ge=0)
    """Layers whose weights changed by less than this (largest absolute change) get no module."""
    use_sparse_bias: bool = False
    """ai-toolkit's sparse residual bias; only false is accepted (easel writes plain LoRA / LoCon)."""
    sparsity: float = 0.98
    """ai-toolkit's sparsity of that bias (only with use_sparse_bias, so unused)."""
    disable_cp: bool = False
    """ai-toolkit's LoCon CP decomposition switch; easel never CP-decomposes, so it has no effect."""

    @field_validator("use_sparse_bias")
    @classmethod
    def _no_sparse_bias(cls, value: bool) -> bool:
        if value:
            raise ValueError("a sparse bias is not a LoRA layout other tools read; easel extracts plain LoRA / LoCon. "
                             "Remove it or set it to false.")
        return value

    @model_validator(mode="after")
    def _values(self) -> "ExtractProcessConfig":
        if self.linear is None:
            self.linear = 4.0 if self.mode == "fixed" else 0.5
        if self.conv is None:
            self.conv = self.linear
        for name in ("linear", "conv"):
            value = getattr(self, name)
            if self.mode == "fixed" and (value < 1 or value != int(value)):
                raise ValueError(f"mode fixed: {name} is a rank, a whole number >= 1 (got {value:g})")
            if self.mode in ("ratio", "quantile") and not 0 < value <= 1:
                raise ValueError(f"mode {self.mode}: {name} must be in (0, 1] (got {value:g})")
            if self.mode == "threshold" and value < 0:
                raise ValueError(f"mode threshold: {name} must be >= 0 (got {value:g})")
        return self


class RescaleLoraConfig(Block):
    """Rescale a LoRA so that weight ``target_weight`` gives what ``current_weight`` gave (ai-toolkit's ``job: mod``)."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["rescale_lora"]
    """Process type."""
    input_path: str
    """The LoRA file to rescale (any layout easel reads)."""
    output_path: str
    """The file to write (may be the input: it is replaced at the end)."""
    current_weight: float = 1.0
    """The weight the LoRA is used at now (e.g. 6 for <lora:x:6>); may be negative to flip it."""
    target_weight: float = 1.0
    """The weight it should be used at instead."""
    scale_target: lowercase(Literal["up_down", "alpha"]) = "up_down"  # type: ignore[valid-type]
    """up_down: scale the factors (LoRA: both by sqrt, LoHa / LoKr: the first); alpha: scale the alpha tensors."""
    save_dtype: Precision = "fp16"
    """Precision of the written file."""
    replace_meta: bool = False
    """Replace the file's metadata by this job's ``meta:`` block (its hashes are recomputed either way)."""
    format: LoraFormat | None = None
    """Key layout to write; default: the input's when easel writes it, else the architecture's."""
    arch: str | None = None
    """Architecture when the file does not say."""
    is_xl: bool = False
    """ai-toolkit's note that the LoRA is for SDXL (its metadata); easel reads the architecture from the file."""
    is_v2: NotSD2 = False
    """ai-toolkit's Stable Diffusion 2.x note; only false is accepted."""

    @field_validator("target_weight")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("target_weight must not be 0 (the LoRA would have to be infinitely strong)")
        return value

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        if self.arch is None:
            return []
        try:
            registry.arch(self.arch)
        except LookupError as err:
            return [(("arch",), str(err))]
        return []
