"""Config of the generate job's ``to_folder`` process (ai-toolkit's schema plus LoRA stacks, img2img, ControlNets and
IP-Adapters)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator

from toolkit.config.base import Block, lowercase
from toolkit.config.blocks import CompileMode, LoraRef, ModelConfig
from toolkit.config.sample import ImageSettings, reference_problems, sampler_problems
from toolkit.config.control import ControlNetConfig, IPAdapterConfig


class GenerateConfig(ImageSettings):
    """What to generate and how."""

    block_name: ClassVar[str] = "generate"

    seed: int = -1
    """Seed of the first image, then seed+1, ...; -1 picks one at random (and records it)."""
    ext: lowercase(Literal["png", "jpg", "jpeg", "webp"]) = "png"  # type: ignore[valid-type]
    """Image file format."""
    prompt_file: bool = False
    """Write a .txt file with the prompt next to each image."""
    prompts: list[str] | str = []
    """Prompts, or the path of a text file with one prompt per line. Inline flags: --n --w --h --seed/--d --cfg/--l --steps/--s."""
    images_per_prompt: int = Field(1, ge=1, validation_alias=AliasChoices("images_per_prompt", "num_repeats"))
    """How many images each prompt makes (seeds counted up)."""
    loras: list[LoraRef] = []
    """LoRAs applied with their weights: h = Wx + sum of w_i B_i A_i x."""
    lora_dirs: list[str] = []
    """Folders searched for ``<lora:name:weight>`` names in prompts."""
    init_images: str | None = None
    """img2img: an image file or a folder of images; each prompt is applied to each image."""
    strength: float = Field(0.6, ge=0, le=1)
    """img2img: how much of the input is re-noised (0 keeps it, 1 ignores it)."""
    reference_images: list[str] | str | None = None
    """Edit models (FLUX.1 Kontext, FLUX.2, Qwen-Image-Edit): an image file or a list of files every prompt edits
    together (several for FLUX.2 / Qwen-Image-Edit-Plus), or a folder: each image in it is edited by each prompt."""
    compile: bool = False
    """torch.compile the denoiser's blocks (as ``train.compile``): the first image waits while they compile, the
    next ones are faster; the UI's generate worker keeps the compiled model between requests."""
    compile_mode: CompileMode = "default"  # type: ignore[valid-type]
    """With ``compile``: torch.compile's mode, as ``train.compile_mode``. ``reduce-overhead`` replays each compiled block
    as a CUDA graph (each denoiser call starts a new graph step); on the CPU every mode compiles as ``default``."""
    encoder_cache_mib: int = Field(1024, ge=0)
    """CPU memory (MiB) for the text encoders' outputs of prompts already encoded, so a prompt repeated (other seeds,
    sizes, denoiser LoRAs) is not encoded again; the UI's generate worker keeps them between requests. LoRAs on a text
    encoder are part of the key. 0 turns it off."""
    grid: bool = False
    """Also write a contact sheet of all images; its labels show where the prompts differ, its metadata (PNG text ``easel_grid``) holds them whole."""
    controlnets: list[ControlNetConfig] = []
    """ControlNets that keep the structure of a control image (several where the architecture takes several); each
    image's control images are written beside it (``<image>_control<i>.png``)."""
    ip_adapter: IPAdapterConfig | None = None
    """An IP-Adapter: reference images that steer the look, next to the prompt (architectures that take them)."""

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
        from toolkit.control.inputs import controlnet_problems, ip_adapter_problems

        spec = registry.arch(self.model.arch).spec
        gen = self.generate
        problems = sampler_problems(registry, self.model.arch, gen.sampler, ("generate", "sampler"))
        problems += [(("generate", "controlnets", *where), message)
                     for where, message in controlnet_problems(gen.controlnets, spec, registry.archs.values(), self.model)]
        problems += [(("generate", "ip_adapter", *where), message) for where, message in ip_adapter_problems(gen.ip_adapter, spec)]
        if gen.compile_mode != "default" and not gen.compile:
            problems.append((("generate", "compile_mode"), "needs generate.compile: true; set it, or remove compile_mode"))
        if gen.reference_images:
            count = len(gen.reference_images) if isinstance(gen.reference_images, list) else 1
            problems += reference_problems(registry, self.model.arch, count, ("generate", "reference_images"))
            if gen.init_images:
                problems.append((("generate", "reference_images"), "reference images and init_images (img2img) cannot be "
                                 "used together; remove one of them"))
        return problems
