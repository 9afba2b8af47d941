"""``UNetAdapter``: what the SD 1.x and SDXL adapters share (UNet LoRA targets, compile units, prediction type)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.models.pipeline_adapter import PipelineAdapter

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.models.base import ControlInput, GenerateRequest

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
"""The linear layers of the UNet's transformer blocks (what kohya's LoRA trains)."""
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
"""The attention and MLP layers of a CLIP text encoder."""


class UNetAdapter(PipelineAdapter):
    """A UNet pipeline with CLIP text encoders; the prediction type comes from the scheduler config or
    ``model.prediction_type``. Subclasses encode prompts and call the UNet."""

    def after_load(self) -> None:
        wanted = self.config.prediction_type
        if wanted and self.pipe.scheduler.config.get("prediction_type") != wanted:
            self.pipe.scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config, prediction_type=wanted)

    def compile_units(self) -> "list[torch.nn.Module]":
        """The UNet's resnets and transformer blocks, the pieces diffusers checkpoints. Its down/up blocks differ in
        width and depth, so whole ones would share no code and compile slowly around the checkpoints nested in them
        (SDXL's did not finish in 280 s on an H100)."""
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.resnet import ResnetBlock2D

        return [module for module in self.denoiser.modules() if isinstance(module, (ResnetBlock2D, BasicTransformerBlock))]

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        targets = {self.denoiser_name: list(UNET_TARGETS)}
        if train_text_encoder:
            targets.update({name: list(CLIP_TARGETS) for name in self.trained_text_encoders()})
        return targets

    def lora_block(self, path: str) -> int | None:
        """kohya's block of a UNet layer: its SGM slot (``input_blocks.N`` -> N, ``middle_block`` -> 12,
        ``output_blocks.N`` -> 13 + N); None outside the blocks (time embedding, conv_in / conv_out)."""
        from families.unet.sgm import to_sgm

        try:
            parts = to_sgm(path, self.denoiser.config).split(".")
        except KeyError:
            return None
        if parts[0] == "middle_block":
            return 12
        if parts[0] in ("input_blocks", "output_blocks") and int(parts[1]) < 12:
            return int(parts[1]) + (13 if parts[0] == "output_blocks" else 0)
        return None

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        return {"guidance_rescale": batch[0].guidance_rescale}

    def control_inputs(self, pipe: Any, controls: "tuple[ControlInput, ...]", request: "GenerateRequest",
                       inits: "list[Image.Image] | None", strength: float, generators: list[Any]) -> dict[str, Any]:
        """diffusers' SD / SDXL ControlNet pipelines: one value per ControlNet (a list for several); union ones take
        their images as ``control_image`` with a ``control_mode`` each, img2img ones the init images as ``image``."""
        one = len(controls) == 1
        images = [control.image for control in controls]
        kwargs: dict[str, Any] = {
            "width": request.width, "height": request.height,
            "controlnet_conditioning_scale": controls[0].scale if one else [c.scale for c in controls],
            "control_guidance_start": controls[0].start if one else [c.start for c in controls],
            "control_guidance_end": controls[0].end if one else [c.end for c in controls],
        }
        if controls[0].mode is not None:  # union: per ControlNet, a list of images and their modes
            kwargs["control_image"] = images if one else [[image] for image in images]
            kwargs["control_mode"] = [c.mode for c in controls] if one else [[c.mode] for c in controls]
        else:
            kwargs["control_image" if inits is not None else "image"] = images[0] if one else images
        if inits is not None:
            kwargs.update(image=inits, strength=strength)
        return kwargs
