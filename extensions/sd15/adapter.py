"""Stable Diffusion 1.x adapter: CLIP ViT-L text encoder, UNet, epsilon or v-prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from families.unet.adapter import UNetAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, ImageInfo


class SD15Adapter(UNetAdapter):
    """SD 1.x (and its fine-tunes). Denoiser name and pipeline class come from ``extensions/sd15/spec.py``."""

    img2img_class: ClassVar[str] = "StableDiffusionImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    quantize_exclusions = ("conv_in", "conv_out", "time_embedding", "time_emb_proj", "conv_norm_out")

    def encode_prompts(self, prompts: list[str]) -> "Conditioning":
        embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return {"prompt_embeds": embeds}

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        dtype = self.denoiser_dtype
        return self.denoiser(noisy_latents.to(dtype), timesteps, encoder_hidden_states=cond["prompt_embeds"].to(dtype)).sample

    def single_file_state_dict(self) -> "dict[str, torch.Tensor]":
        """UNet, VAE and text encoder in the original (LDM) checkpoint layout."""
        from families.unet.ldm import sd_pipeline_to_ldm

        return sd_pipeline_to_ldm(self.pipe)
