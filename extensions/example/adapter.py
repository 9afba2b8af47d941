"""The example architecture's adapter: what differs from the shared diffusers glue (``PipelineAdapter``).

``PipelineAdapter`` loads the pipeline the spec names (hub id, folder, single file, ``tiny:example``), places
it in memory, encodes and decodes images with its VAE, builds the samplers and runs txt2img / img2img. An
architecture adds the math its denoiser needs: prompt encoding, one denoiser call, and its LoRA targets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from toolkit.models.pipeline_adapter import PipelineAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, ImageInfo


class ExampleAdapter(PipelineAdapter):
    """A UNet conditioned on one CLIP encoder's last hidden state; DDPM schedule from the scheduler config."""

    img2img_class: ClassVar[str] = "StableDiffusionImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)

    def encode_prompts(self, prompts: list[str]) -> "Conditioning":
        embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return {"prompt_embeds": embeds}

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        dtype = self.denoiser_dtype
        return self.denoiser(noisy_latents.to(dtype), timesteps, encoder_hidden_states=cond["prompt_embeds"].to(dtype)).sample

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        targets = {self.denoiser_name: ["to_q", "to_k", "to_v", "to_out.0"]}
        if train_text_encoder:
            targets["text_encoder"] = ["q_proj", "k_proj", "v_proj", "out_proj"]
        return targets
