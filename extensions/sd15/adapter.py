"""Stable Diffusion 1.x adapter: CLIP ViT-L text encoder, UNet, epsilon or v-prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.pipeline_adapter import PipelineAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, ImageInfo

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
"""The linear layers of the UNet's transformer blocks (what kohya's LoRA trains)."""
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
"""The attention and MLP layers of a CLIP text encoder."""


class SD15Adapter(PipelineAdapter):
    """SD 1.x (and its fine-tunes); the prediction type comes from the scheduler config or ``model.prediction_type``."""

    pipeline_class: ClassVar[str] = "StableDiffusionPipeline"
    img2img_class: ClassVar[str] = "StableDiffusionImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tiny_builder: ClassVar[str] = "toolkit.testing.tiny:build_sd15"
    denoiser_name = "unet"
    quantize_exclusions = ("conv_in", "conv_out", "time_embedding", "time_emb_proj", "conv_norm_out")

    def after_load(self) -> None:
        wanted = self.config.prediction_type
        if wanted and self.pipe.scheduler.config.get("prediction_type") != wanted:
            self.pipe.scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config, prediction_type=wanted)

    def encode_prompts(self, prompts: list[str]) -> "Conditioning":
        embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return {"prompt_embeds": embeds}

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        dtype = self.denoiser_dtype
        return self.denoiser(noisy_latents.to(dtype), timesteps, encoder_hidden_states=cond["prompt_embeds"].to(dtype)).sample

    def compile_units(self) -> "list[torch.nn.Module]":
        """The UNet's resnets and transformer blocks, the pieces diffusers checkpoints. Its down/up blocks differ in
        width and depth, so whole ones would share no code and compile slowly around the checkpoints nested in them
        (SDXL's did not finish in 280 s on an H100)."""
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.resnet import ResnetBlock2D

        return [module for module in self.denoiser.modules() if isinstance(module, (ResnetBlock2D, BasicTransformerBlock))]

    def single_file_state_dict(self) -> "dict[str, torch.Tensor]":
        """UNet, VAE and text encoder in the original (LDM) checkpoint layout."""
        from toolkit.models.ldm import sd_pipeline_to_ldm

        return sd_pipeline_to_ldm(self.pipe)

    def lora_block(self, path: str) -> int | None:
        """kohya's block of a UNet layer: its SGM slot (``input_blocks.N`` -> N, ``middle_block`` -> 12,
        ``output_blocks.N`` -> 13 + N); None outside the blocks (time embedding, conv_in / conv_out)."""
        from toolkit.lora_io.sgm import to_sgm

        try:
            parts = to_sgm(path, self.denoiser.config).split(".")
        except KeyError:
            return None
        if parts[0] == "middle_block":
            return 12
        if parts[0] in ("input_blocks", "output_blocks") and int(parts[1]) < 12:
            return int(parts[1]) + (13 if parts[0] == "output_blocks" else 0)
        return None

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        targets = {self.denoiser_name: list(UNET_TARGETS)}
        if train_text_encoder:
            targets.update({name: list(CLIP_TARGETS) for name in self.trained_text_encoders()})
        return targets

    def call_kwargs(self, batch: list[Any]) -> dict[str, Any]:
        return {"guidance_rescale": batch[0].guidance_rescale}
