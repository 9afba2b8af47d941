"""The preview blocks (``sample``, its ``samples[]`` items) and the image settings of generate / evaluate jobs, with
the checks of samplers and reference images they share.

Key names follow ai-toolkit's; each field's docstring is the documentation shown in docs/config.md.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field

from toolkit.config.base import Block, lowercase
from toolkit.config.control import ControlNetConfig


class SampleItem(Block):
    """One preview prompt in ai-toolkit's ``samples:`` list form."""

    block_name: ClassVar[str] = "sample.samples[]"
    aitoolkit: ClassVar[bool] = True

    prompt: str
    """The prompt; ``[trigger]`` is replaced by the trigger word; inline flags (--n, --seed, ...) work."""
    neg: str | None = None
    """Negative prompt for this sample; default ``sample.neg``."""
    width: int | None = Field(None, ge=8)
    """Width for this sample; default ``sample.width``."""
    height: int | None = Field(None, ge=8)
    """Height for this sample; default ``sample.height``."""
    seed: int | None = None
    """Seed for this sample; default from ``sample.seed`` / ``walk_seed``."""
    guidance_scale: float | None = None
    """Guidance for this sample; default ``sample.guidance_scale``."""
    sample_steps: int | None = Field(None, ge=1)
    """Steps for this sample; default ``sample.sample_steps``."""
    network_multiplier: float | None = None
    """Adapter weight for this sample; default ``sample.network_multiplier``."""
    ctrl_img: str | None = None
    """ai-toolkit's image of this preview, whose meaning the architecture sets: for one that takes reference images (edit
    models, e.g. flux_kontext, flux2) the reference this preview edits (as ``ctrl_img_1``); for any other the control
    image ``sample.controlnets[ctrl_idx]`` reads (preprocessed as that entry says), e.g. a fixed photo whose structure
    previews of a style LoRA keep. With neither (no reference images, no such ControlNet) a config error at its line."""
    ctrl_idx: int = Field(0, ge=0)
    """Which of ``sample.controlnets`` reads ``ctrl_img`` (ai-toolkit's control index); default the first. Unused by edit models."""
    ctrl_img_1: str | None = None
    """Edit models only: the first reference image; with ``ctrl_img_2`` / ``_3`` several are used together (FLUX.2,
    Qwen-Image-Edit-Plus)."""
    ctrl_img_2: str | None = None
    """Edit models only: the second reference image."""
    ctrl_img_3: str | None = None
    """Edit models only: the third reference image."""

    def references(self) -> list[str]:
        """This preview's reference image files for an edit model, in order (``ctrl_img_1``, else ``ctrl_img``, then
        ``_2``, ``_3``)."""
        return [path for _, path in self.reference_keys()]

    def reference_keys(self) -> list[tuple[str, str]]:
        """(key, file) of each of ``references()``, for errors at their line."""
        first = ("ctrl_img_1", self.ctrl_img_1) if self.ctrl_img_1 else ("ctrl_img", self.ctrl_img)
        return [(key, path) for key, path in (first, ("ctrl_img_2", self.ctrl_img_2), ("ctrl_img_3", self.ctrl_img_3)) if path]


class SampleConfig(Block):
    """Preview images made during training."""

    block_name: ClassVar[str] = "sample"
    aitoolkit: ClassVar[bool] = True

    sampler: str | None = None
    """Sampler: flowmatch for Z-Image; euler, euler_a, ddim, dpm++ or ddpm for SD. Default: the architecture's."""
    sample_every: int = Field(250, ge=1)
    """Make previews every N steps (also before training, unless skipped, and at the end)."""
    sample_start_step: int = Field(0, ge=0)
    """Make the every-N-steps previews only from this step on (those before training and at the end are made anyway)."""
    width: int = Field(512, ge=8)
    """Preview width in pixels."""
    height: int = Field(512, ge=8)
    """Preview height in pixels."""
    prompts: list[str] = []
    """Preview prompts; ``[trigger]`` is replaced by the trigger word; inline flags (--n, --seed, ...) work."""
    samples: list[SampleItem] = []
    """ai-toolkit's form of ``prompts``: a list of ``{prompt: ...}`` with optional per-sample settings."""
    neg: str = ""
    """Negative prompt (used when guidance_scale > 1)."""
    seed: int = 0
    """Seed of the first preview."""
    walk_seed: bool = False
    """Give preview i the seed ``seed + i`` instead of the same seed."""
    guidance_scale: float | None = None
    """Classifier-free guidance; default: the architecture variant's (1 for Z-Image Turbo)."""
    sample_steps: int | None = Field(None, ge=1)
    """Denoising steps; default: the architecture variant's (8 for Z-Image Turbo)."""
    network_multiplier: float = 1.0
    """Weight of the trained adapter in previews. With ``train.compile``, previews at several weights (this and the
    prompts' own) compile the blocks once for each weight, at its first preview."""
    guidance_rescale: float = Field(0.0, ge=0, le=1)
    """SD: rescale guided noise to reduce over-exposure (0 disables)."""
    format: lowercase(Literal["png", "jpg", "jpeg", "webp"]) = Field("png", validation_alias=AliasChoices("format", "ext"))  # type: ignore[valid-type]
    """Image file format of previews (and of each step's grid ``<step>_grid.<format>``, whose metadata holds the full prompts)."""
    controlnets: list[ControlNetConfig] = []
    """ControlNets for the previews (e.g. a style LoRA's previews on the structure of a fixed image): each reads its
    ``image``, or a prompt's ``ctrl_img`` (not with an edit model, whose ``ctrl_img`` is a reference image); a preview
    with a control image takes its aspect ratio at width x height."""

    def control_images(self, item: SampleItem, references: bool) -> list[str]:
        """The control image each of ``controlnets`` reads for the preview ``item``. ``references``: the architecture
        takes reference images, so ``ctrl_img`` is one of those and every ControlNet reads its own ``image``."""
        own = None if references else item.ctrl_img
        return [own if own is not None and item.ctrl_idx == index else str(control.image)
                for index, control in enumerate(self.controlnets)]

    def control_problems(self, references: bool) -> list[tuple[tuple, str]]:
        """``check`` results (paths under ``sample``) for control images; ``references`` as in ``control_images``.

        Without reference images a ``ctrl_img`` needs ``controlnets[ctrl_idx]`` to read it, and a ControlNet without
        an ``image`` needs every prompt's ``ctrl_img``.
        """
        items = [(("prompts", n), SampleItem(prompt=p)) for n, p in enumerate(self.prompts)]
        items += [(("samples", n), item) for n, item in enumerate(self.samples)]
        problems: list[tuple[tuple, str]] = []
        for number, (where, item) in enumerate(items):
            if not references and item.ctrl_img is not None and item.ctrl_idx >= len(self.controlnets):
                problems.append(((*where, "ctrl_img"), f"prompt {number} ('{item.prompt[:40]}') has ctrl_img but "
                                 f"sample.controlnets has no entry {item.ctrl_idx} to read it, and the architecture takes no "
                                 "reference images; add the ControlNet under sample.controlnets, or use an edit model"))
        for index, control in enumerate(self.controlnets):
            if control.image is not None:
                continue
            if references:
                problems.append((("controlnets", index), f"sample.controlnets[{index}] has no image, and ctrl_img is a "
                                 "reference image for this architecture, not a control image; set its image"))
                continue
            unread = [(number, item) for number, (_, item) in enumerate(items)
                      if item.ctrl_img is None or item.ctrl_idx != index]
            if unread:
                number, item = unread[0]
                problems.append((("controlnets", index), f"sample.controlnets[{index}] has no image and prompt {number} "
                                 f"('{item.prompt[:40]}') gives it no ctrl_img; set its image, or ctrl_img (with "
                                 f"ctrl_idx: {index}) on every prompt"))
        return problems

    def all_prompts(self) -> list[SampleItem]:
        """``prompts`` and ``samples`` together, as items."""
        return [SampleItem(prompt=p) for p in self.prompts] + list(self.samples)


class ImageSettings(Block):
    """How images are generated; unset values come from the architecture and its variant."""

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
    guidance_scale: float | None = None
    """Classifier-free guidance scale; 1 or less turns guidance off (one pass, no negative prompt), as Z-Image
    Turbo wants. Default: the architecture variant's."""
    guidance_rescale: float = Field(0.0, ge=0, le=1)
    """SD: rescale guided noise to reduce over-exposure."""
    sample_steps: int | None = Field(None, ge=1)
    """Denoising steps (= denoiser passes, e.g. 8 for Z-Image Turbo); default: the architecture variant's."""
    batch_size: int = Field(1, ge=1)
    """Images denoised together."""


def sampler_problems(registry: Any, arch: str, sampler: str | None, where: tuple) -> list[tuple[tuple, str]]:
    """A ``check`` result when ``sampler`` does not fit the architecture ``arch``."""
    from toolkit.config.messages import suggest

    spec = registry.arch(arch).spec
    if sampler is None or sampler in spec.samplers:
        return []
    return [(where, f"sampler '{sampler}' does not fit architecture '{spec.name}'"
                    f"{suggest(sampler, list(spec.samplers)) or '.'} Valid: {', '.join(spec.samplers)}.")]


def reference_problems(registry: Any, arch: str, count: int, where: tuple) -> list[tuple[tuple, str]]:
    """A ``check`` result when ``count`` reference images (edit pairs, sample or generate references) do not fit ``arch``."""
    spec = registry.arch(arch).spec
    if spec.references is None:
        return [(where, f"architecture '{spec.name}' takes no reference images; edit models do (e.g. flux_kontext, "
                        "flux2, qwen_image_edit). Remove the reference images or change model.arch.")]
    if count > spec.references.count:
        return [(where, f"{count} reference images, but architecture '{spec.name}' takes at most {spec.references.count}.")]
    return []
