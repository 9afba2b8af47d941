"""Config of the evaluate job's ``compare`` process: LoRA variants of one base model, scored with CLIP."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from toolkit.config.base import Block, lowercase
from toolkit.config.blocks import LoraRef, ModelConfig
from toolkit.config.sample import ImageSettings, sampler_problems
from toolkit.config.control import ControlNetConfig


class VariantConfig(Block):
    """One row of the comparison: the base model with zero, one or several LoRAs."""

    block_name: ClassVar[str] = "variants[]"

    name: str = Field(min_length=1)
    """Row name in the reports and the grid (e.g. base, watercolor, watercolor_pixelart_0.6_0.4)."""
    loras: list[LoraRef] = []
    """LoRAs applied with their weights (none: the base model alone)."""
    reference_images: str | None = None
    """Style reference folder for this variant (e.g. its own training images); default: the process's ``reference_images``."""
    strength: float | None = Field(None, ge=0, le=1)
    """img2img strength of this variant (with the process's ``init_images``); default: the process's ``strength``."""
    controlnets: list[ControlNetConfig] = []
    """ControlNets of this variant; one without an image reads each input (``init_images``) through its preprocessor."""


class EvaluateProcessConfig(Block):
    """Generate the same prompts and seeds with each variant, then score them (CLIP score, style similarity)."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["compare"]
    """Process type."""
    output_folder: str
    """Where results.json/.md/.csv, grid.png and the images (images/<index>_<variant>/) are written."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    model: ModelConfig
    """The base model every variant shares (loaded once; LoRAs are swapped per variant)."""
    variants: list[VariantConfig] = Field(min_length=1)
    """The rows: each a name and its LoRAs with weights."""
    prompts: list[str] = Field(min_length=1)
    """Plain prompts (no inline flags); each is one grid column and is what the CLIP score compares against."""
    seeds: list[int] | None = None
    """Seeds; every prompt is generated once per seed with every variant."""
    images_per_prompt: int | None = Field(None, ge=1)
    """Instead of ``seeds``: this many images per prompt, seeds ``seed``, ``seed + 1``, ... (default 1)."""
    seed: int = 0
    """First seed when ``seeds`` is not given."""
    generate: ImageSettings = ImageSettings()
    """Generation settings."""
    reference_images: str | None = None
    """Folder of style reference images for the style similarity (a variant may name its own); unset: not measured."""
    init_images: str | None = None
    """img2img inputs (a file or a folder): every prompt is generated from each, and "structure kept" (edge agreement
    between input and output) is measured; unset: txt2img, not measured."""
    strength: float = Field(0.6, ge=0, le=1)
    """img2img strength of the variants that set none."""
    clip_model: str = "openai/clip-vit-large-patch14"
    """CLIP model (hub id or local folder) for both metrics; ``tiny:clip`` is a tiny random one built in code (offline; the scores mean nothing)."""
    clip_score_scale: lowercase(Literal["percent", "cosine"]) = "percent"  # type: ignore[valid-type]
    """percent: 100 * max(cos, 0), the usual CLIP score (about 30 for a good match); cosine: the raw cosine (about 0.3)."""
    clip_batch_size: int = Field(16, ge=1)
    """Images (or prompts) embedded together."""
    grid_cell: int = Field(256, ge=16)
    """Side of each image in grid.png, in pixels."""

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, value: list[VariantConfig]) -> list[VariantConfig]:
        names = [variant.name for variant in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _seeds_or_count(self) -> "EvaluateProcessConfig":
        if self.seeds is not None and self.images_per_prompt is not None:
            raise ValueError("set either seeds or images_per_prompt, not both")
        if self.seeds is not None and not self.seeds:
            raise ValueError("seeds is empty; give at least one seed")
        return self

    def resolved_seeds(self) -> list[int]:
        """The seeds every prompt is generated with."""
        if self.seeds is not None:
            return list(self.seeds)
        return [self.seed + i for i in range(self.images_per_prompt or 1)]

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        from toolkit.control.inputs import controlnet_problems

        spec = registry.arch(self.model.arch).spec
        problems = sampler_problems(registry, self.model.arch, self.generate.sampler, ("generate", "sampler"))
        for index, variant in enumerate(self.variants):
            problems += [(("variants", index, "controlnets", *where), message) for where, message
                         in controlnet_problems(variant.controlnets, spec, registry.archs.values(), self.model)]
            if self.init_images is None:
                problems += [(("variants", index, "controlnets", n, "image"), "no control image: set image, or the process's "
                              "init_images (a ControlNet without an image reads each input)")
                             for n, control in enumerate(variant.controlnets) if control.image is None]
        return problems
