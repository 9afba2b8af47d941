"""Config of the generate job's ``to_folder`` process (ai-toolkit's schema plus LoRA stacks and img2img)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator

from toolkit.config.base import Block, lowercase
from toolkit.config.blocks import ModelConfig
from toolkit.config.messages import suggest


class LoraRef(Block):
    """One LoRA applied while generating."""

    block_name: ClassVar[str] = "generate.loras[]"

    path: str
    """A LoRA file (any supported format), or a name looked up in ``lora_dirs``."""
    weight: float = 1.0
    """Multiplier of the LoRA's update; may be negative or above 1."""


class GenerateConfig(Block):
    """What to generate and how."""

    block_name: ClassVar[str] = "generate"

    sampler: str | None = None
    """flowmatch for Z-Image; euler, euler_a, ddim, dpm++ or ddpm for SD. Default: the architecture's."""
    width: int | None = Field(None, ge=8)
    """Image width, rounded to the architecture's multiple; default: its native size. img2img: width x height is
    the pixel area; the output keeps each input's aspect ratio."""
    height: int | None = Field(None, ge=8)
    """Image height, rounded to the architecture's multiple; default: its native size. img2img: see ``width``."""
    neg: str = ""
    """Negative prompt (used when guidance_scale > 1)."""
    seed: int = -1
    """Seed of the first image, then seed+1, ...; -1 picks one at random (and records it)."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale; 1 or less turns guidance off (one pass, no negative prompt), as Z-Image
    Turbo wants. Default: the architecture variant's."""
    guidance_rescale: float = Field(0.0, ge=0, le=1)
    """SD: rescale guided noise to reduce over-exposure."""
    sample_steps: int | None = Field(None, ge=1)
    """Denoising steps (= denoiser passes, e.g. 8 for Z-Image Turbo); default: the architecture variant's."""
    ext: lowercase(Literal["png", "jpg", "jpeg", "webp"]) = "png"  # type: ignore[valid-type]
    """Image file format."""
    prompt_file: bool = False
    """Write a .txt file with the prompt next to each image."""
    prompts: list[str] | str = []
    """Prompts, or the path of a text file with one prompt per line. Inline flags: --n --w --h --seed/--d --cfg/--l --steps/--s."""
    images_per_prompt: int = Field(1, ge=1, validation_alias=AliasChoices("images_per_prompt", "num_repeats"))
    """How many images each prompt makes (seeds counted up)."""
    batch_size: int = Field(1, ge=1)
    """Images denoised together."""
    loras: list[LoraRef] = []
    """LoRAs applied with their weights: h = Wx + sum of w_i B_i A_i x."""
    lora_dirs: list[str] = []
    """Folders searched for ``<lora:name:weight>`` names in prompts."""
    init_images: str | None = None
    """img2img: an image file or a folder of images; each prompt is applied to each image."""
    strength: float = Field(0.6, ge=0, le=1)
    """img2img: how much of the input is re-noised (0 keeps it, 1 ignores it)."""
    grid: bool = False
    """Also write a contact sheet of all images."""

    @field_validator("ext", mode="before")
    @classmethod
    def _strip_dot(cls, value: Any) -> Any:
        return value.lstrip(".") if isinstance(value, str) else value


class GenerateProcessConfig(Block):
    """Generate images to a folder."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["to_folder"]
    """Process type."""
    output_folder: str
    """Where images are written."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    generate: GenerateConfig
    """What to generate."""
    model: ModelConfig
    """The base model."""

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        arch = registry.arch(self.model.arch).spec
        sampler = self.generate.sampler
        if sampler is not None and sampler not in arch.samplers:
            return [(("generate", "sampler"), f"sampler '{sampler}' does not fit architecture '{arch.name}'"
                     f"{suggest(sampler, list(arch.samplers)) or '.'} Valid: {', '.join(arch.samplers)}.")]
        return []
