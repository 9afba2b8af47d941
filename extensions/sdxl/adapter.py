"""Stable Diffusion XL adapter: two CLIP text encoders, pooled embeddings, size/crop micro-conditioning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from families.unet.adapter import UNetAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, GenerateRequest, ImageInfo


class SDXLAdapter(UNetAdapter):
    """SDXL base models; LoRA targets and prediction type as SD 1.x (the UNet family's). Denoiser name and
    pipeline class come from ``extensions/sdxl/spec.py``.

    Conditioning: ``prompt_embeds`` (both encoders' penultimate states) and ``pooled_prompt_embeds``.
    """

    img2img_class: ClassVar[str] = "StableDiffusionXLImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")
    quantize_exclusions = ("conv_in", "conv_out", "time_embedding", "add_embedding", "time_emb_proj", "conv_norm_out")

    def single_file_state_dict(self) -> "dict[str, torch.Tensor]":
        """UNet, VAE and both text encoders in the SGM checkpoint layout (CLIP-G in OpenCLIP names)."""
        from families.unet.ldm import sdxl_pipeline_to_sgm

        return sdxl_pipeline_to_sgm(self.pipe)

    def encode_prompts(self, prompts: list[str]) -> "Conditioning":
        embeds, _, pooled, _ = self.pipe.encode_prompt(prompts, device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def time_ids(self, latents: "torch.Tensor", image_info: "list[ImageInfo] | None") -> "torch.Tensor":
        """SDXL's added time ids per row: original size, crop top-left, target size (all (h, w))."""
        import torch

        if image_info is None:
            size = (latents.shape[-2] * self.pipe.vae_scale_factor, latents.shape[-1] * self.pipe.vae_scale_factor)
            rows = [[*size, 0, 0, *size]] * latents.shape[0]
        else:
            rows = [[*info.original_size, *info.crop_top_left, *info.target_size] for info in image_info]
        return torch.tensor(rows, dtype=self.denoiser_dtype, device=latents.device)

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        dtype = self.denoiser_dtype
        added = {"text_embeds": cond["pooled_prompt_embeds"].to(dtype), "time_ids": self.time_ids(noisy_latents, image_info)}
        return self.denoiser(noisy_latents.to(dtype), timesteps, encoder_hidden_states=cond["prompt_embeds"].to(dtype),
                             added_cond_kwargs=added).sample

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        kwargs = super().call_kwargs(batch)
        if any("prompt_2" in r.extras for r in batch):
            kwargs["prompt_2"] = [r.extras.get("prompt_2", r.prompt) for r in batch]
        if any("negative_prompt_2" in r.extras for r in batch):
            kwargs["negative_prompt_2"] = [r.extras.get("negative_prompt_2", r.negative_prompt) for r in batch]
        return kwargs
