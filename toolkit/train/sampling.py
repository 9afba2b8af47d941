"""Preview images during training, made by ``adapter.generate`` with the trained network active.

Previews never disturb training: the global random generators are saved and restored around them (the
trainer's noise has its own generator anyway), modules are put in eval mode and back, the EMA weights
(if any) are swapped in and out, and the network's multiplier is set per preview and restored.
Files: ``samples/<step:09d>_<i:02d>.<format>``.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.models.base import GenerateRequest
from toolkit.train.state import preserved_rng

if TYPE_CHECKING:
    from PIL import Image

    from toolkit.config.sample import SampleConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.models.encoder_memo import EncoderMemo
    from toolkit.network.network import Network
    from toolkit.registry import ArchRef
    from toolkit.train.ema import EMA


@dataclass(frozen=True)
class Preview:
    """One preview: what to generate and at which network weight."""

    request: GenerateRequest
    multiplier: float


def preview_requests(sample: "SampleConfig", arch: "ArchRef") -> list[Preview]:
    """The previews of a ``sample:`` block, defaults from the architecture variant.

    This is the one place where a preview prompt becomes a request: ``[trigger]`` is already replaced by
    the config loader, and inline prompt flags (--n, --w, --h, --seed, ...) are parsed here. An item's ``ctrl_img``
    (``_1..3``) are the reference images of an architecture that takes them (edit models), read here; otherwise, with
    ``sample.controlnets``, ``ctrl_img`` is the control image of ``ctrl_idx``. Control images are preprocessed.
    """
    from toolkit.control.inputs import controls_for
    from toolkit.sampling.prompts import parse_prompt

    defaults = arch.defaults
    sampler = sample.sampler or arch.spec.default_sampler
    references = arch.spec.references is not None  # then ctrl_img is a reference image, not a control image
    previews = []
    for index, item in enumerate(sample.all_prompts()):
        flags = parse_prompt(item.prompt)  # inline flags beat the item's fields, which beat the block's
        seed = first(flags.seed, item.seed, sample.seed + (index if sample.walk_seed else 0))
        guidance = first(flags.guidance_scale, item.guidance_scale, sample.guidance_scale, defaults.get("guidance_scale"), 1.0)
        size = (first(flags.width, item.width, sample.width), first(flags.height, item.height, sample.height))
        controls: tuple = ()
        if sample.controlnets:
            controls, size = controls_for(sample.controlnets, sample.control_images(item, references), size, arch.spec)
        request = GenerateRequest(
            prompt=flags.prompt, width=size[0], height=size[1], controls=controls,
            steps=first(flags.steps, item.sample_steps, sample.sample_steps, int(defaults.get("sample_steps", 20))),
            guidance_scale=float(guidance), seed=seed, sampler=sampler,
            negative_prompt=first(flags.negative, item.neg, sample.neg),
            guidance_rescale=first(flags.guidance_rescale, sample.guidance_rescale), extras=dict(flags.extras),
            references=[_reference(path) for path in item.references()] if references else [])
        multiplier = item.network_multiplier if item.network_multiplier is not None else sample.network_multiplier
        previews.append(Preview(request, multiplier))
    return previews


def _reference(path: str) -> "Image.Image":
    """A preview's reference image (``ctrl_img``), read once."""
    from toolkit.data.images import BadImage, load_image
    from toolkit.errors import EaselError

    try:
        return load_image(Path(path).expanduser())
    except BadImage as err:
        raise EaselError(f"sample reference image '{path}' (ctrl_img): {err.reason}; fix or replace it.") from None


def first(*values):  # noqa: ANN001, ANN201 - the first value that is set
    return next(value for value in values if value is not None)


def save_previews(images: "list[Image.Image]", folder: Path, step: int, image_format: str,
                  labels: list[str] | None = None) -> list[Path]:
    """Write one step's previews and, when there are several, their grid ``<step>_grid.<format>`` (full labels in its metadata)."""
    from toolkit.output import atomic_path
    from toolkit.sampling.grid import make_grid, save_grid

    folder.mkdir(parents=True, exist_ok=True)
    suffix = "jpg" if image_format == "jpeg" else image_format
    kind = "JPEG" if suffix == "jpg" else suffix.upper()
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"{step:09d}_{index:02d}.{suffix}")
        with atomic_path(paths[-1]) as temp:
            image.save(temp, format=kind)
    if len(images) > 1:
        with atomic_path(folder / f"{step:09d}_grid.{suffix}") as temp:
            save_grid(make_grid(images, labels), temp, {"labels": labels}, kind)
    return paths


def make_previews(adapter: "ModelAdapter", network: "Network", ema: "EMA | None", previews: list[Preview],
                  offloaded: list[str], inference_lora: str | None = None,
                  memo: "EncoderMemo | None" = None) -> "list[Image.Image]":
    """Generate the previews with the network (EMA weights if any) at each preview's multiplier.

    ``offloaded`` names components moved off the device during training (brought back meanwhile, except the text
    encoders ``memo`` parks: it brings them in only for a prompt it has not seen); ``inference_lora``
    (``model.inference_lora_path``) is applied for the previews only.
    """
    import torch

    from toolkit.lora_io.apply import applied_to, apply_loras, remove_loras
    from toolkit.models.loading import resolve_file

    modules = [adapter.denoiser, *adapter.text_encoders.values()]
    modes = [module.training for module in modules]
    images = []
    with ExitStack() as stack:
        stack.enter_context(preserved_rng())
        stack.enter_context(torch.no_grad())
        stack.enter_context(ema.swapped() if ema is not None else nullcontext())
        brought = [name for name in offloaded if memo is None or name not in memo.parked]
        if brought:
            adapter.move(brought, adapter.device)
        if inference_lora:
            apply_loras(adapter, [(resolve_file(inference_lora, "model.inference_lora_path"), 1.0)])
            stack.callback(remove_loras, adapter)
        if memo is not None:  # the inference LoRA's file is part of the key of the encoders it changes
            stack.enter_context(memo.round({name: applied_to(adapter, name) for name in adapter.text_encoders}))
        for module in modules:
            module.eval()
        casting = network.cast_inputs(True)  # previews run without autocast
        try:
            for preview in previews:
                with network.scaled(preview.multiplier):
                    images.extend(adapter.generate([preview.request]))
        finally:
            network.cast_inputs(casting)
            for module, mode in zip(modules, modes):
                module.train(mode)
            if brought:
                adapter.move(brought, "cpu")
    return images
