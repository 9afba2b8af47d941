"""``UNetAdapter``: what the SD 1.x and SDXL adapters share (UNet LoRA targets, compile units, prediction type)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.models.pipeline_adapter import PipelineAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import GenerateRequest

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
            targets.update({name: list(CLIP_TARGETS) for name in self.text_encoder_names})
        return targets

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        return {"guidance_rescale": batch[0].guidance_rescale}
