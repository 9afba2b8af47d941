"""FLUX.2 adapter ([dev] and [klein] 4B / 9B): the 32-channel FLUX.2 VAE, a DiT on 2x2-patch tokens, flow matching.

Conventions of diffusers' Flux2Pipeline / Flux2KleinPipeline that this adapter hides:
- latents: the VAE's (B, 32, H/8, W/8) are normalised per 2x2 patch by the VAE's batch-norm statistics; easel
  keeps them unpatched (``encode_images`` returns (B, 32, H/8, W/8)), ``predict`` patches them into (B, 128, h/2,
  w/2), flattens them into tokens with 4-d position ids (t, row, column, 0) and undoes both on the output;
- text: the pipeline's own ``encode_prompt`` (Klein: Qwen3 hidden states 9, 18, 27 stacked; [dev]: Mistral's
  10, 20, 30 after its system message), padded to ``max_sequence_length``; text ids (0, 0, 0, position);
- the transformer takes sigma (t / 1000) and predicts ``noise - x0``; [dev] is guidance-distilled (a guidance
  value feeds an embedding: ``train_guidance`` 1.0 in training), Klein samples with real CFG (``guidance_scale``
  the usual CFG scale, a negative prompt as ``negative_prompt_embeds``; the distilled Klein ignores it);
- reference images (edits): each is encoded and patched the same way and appended to the image tokens with
  time coordinate 10 + 10 i; only the target's tokens of the output are kept;
- img2img: diffusers has no FLUX.2 img2img pipeline, so the init image is noised to the schedule's sigma at
  ``strength`` and the pipeline runs the rest of that schedule from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.base import NoiseSchedule, ResolutionShift
from toolkit.models.pipeline_adapter import PipelineAdapter, pil_to_pixels

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, GenerateRequest, ImageInfo
    from toolkit.registry import ArchRef

TRANSFORMER_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                       "attn.add_v_proj", "attn.to_add_out", "ff.linear_in", "ff.linear_out", "ff_context.linear_in",
                       "ff_context.linear_out", "attn.to_qkv_mlp_proj", "attn.to_out"]
"""Attention and MLP layers of the double-stream blocks, the fused projections of the single-stream ones."""
QWEN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
DEFAULT_BASE = {"flux2": "black-forest-labs/FLUX.2-dev", "flux2_klein_4b": "black-forest-labs/FLUX.2-klein-base-4B",
                "flux2_klein_9b": "black-forest-labs/FLUX.2-klein-base-9B"}
"""Where text encoder, tokenizer and VAE come from when name_or_path is a transformer-only single file."""


def patchify(latents: "torch.Tensor") -> "torch.Tensor":
    """(B, C, h, w) -> (B, 4C, h/2, w/2), Flux2Pipeline's channel order."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(latents: "torch.Tensor") -> "torch.Tensor":
    b, c, h, w = latents.shape
    return latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


def tokens_and_ids(latents: "torch.Tensor", time: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """Unpatched latents (B, C, h, w) -> tokens (B, h/2 * w/2, 4C) and their ids (B, h/2 * w/2, 4) = (time, row, column, 0)."""
    import torch

    patched = patchify(latents)
    b, channels, h, w = patched.shape
    ids = torch.cartesian_prod(torch.tensor([time]), torch.arange(h), torch.arange(w), torch.arange(1))
    return patched.reshape(b, channels, h * w).permute(0, 2, 1), ids.unsqueeze(0).expand(b, -1, -1).to(latents.device)


class Flux2Adapter(PipelineAdapter):
    """FLUX.2. Conditioning: ``prompt_embeds`` (B, L, D) padded to ``max_sequence_length``; with references (training)
    ``reference_latents_<i>`` (B, 32, h_i, w_i), one per slot."""

    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    denoiser_file: ClassVar[str] = "Flux2Transformer2DModel"
    model_kwargs_keys: ClassVar[tuple[str, ...]] = ("config", "max_sequence_length", "train_guidance")
    takes_negative_prompt: ClassVar[bool] = False
    quantize_exclusions = ("x_embedder", "context_embedder", "time_guidance_embed", "double_stream_modulation_img",
                           "double_stream_modulation_txt", "single_stream_modulation", "norm_out", "proj_out")

    @classmethod
    def base_for(cls, arch: "ArchRef") -> str:
        """Single files hold only the transformer (as BFL and ComfyUI distribute it); the rest comes from
        ``model_kwargs.config``, else this architecture's hub repository."""
        return DEFAULT_BASE[arch.spec.name]

    def _setting(self, key: str, fallback: Any) -> Any:
        return self.config.model_kwargs.get(key, self.arch.defaults.get(key, fallback))

    @property
    def max_sequence_length(self) -> int:
        return int(self._setting("max_sequence_length", 512))

    def _bn(self, like: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor]":
        """The VAE's per-patch-channel mean and std, shaped (1, 128, 1, 1)."""
        import torch

        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor":
        latents = patchify(self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode())
        mean, std = self._bn(latents)
        return unpatchify((latents - mean) / std)

    def decode_latents(self, latents: "torch.Tensor") -> "torch.Tensor":
        patched = patchify(latents.to(self.device, self.vae.dtype))
        mean, std = self._bn(patched)
        return self.vae.decode(unpatchify(patched * std + mean)).sample.clamp(-1, 1)

    def encode_prompts(self, prompts: list[str], references: "list[list[torch.Tensor]] | None" = None) -> "Conditioning":
        embeds = self.pipe.encode_prompt(prompt=list(prompts), device=self.device, max_sequence_length=self.max_sequence_length)[0]
        return {"prompt_embeds": embeds}

    def with_references(self, cond: "Conditioning", references: "list[torch.Tensor]") -> "Conditioning":
        return {**cond, **{f"reference_latents_{slot}": latents for slot, latents in enumerate(references)}}

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        import torch

        dtype, device = self.denoiser_dtype, noisy_latents.device
        batch, _, height, width = noisy_latents.shape
        tokens, ids = tokens_and_ids(noisy_latents.to(dtype), 0)
        parts, part_ids = [tokens], [ids]
        slot = 0
        while f"reference_latents_{slot}" in cond:
            extra, extra_ids = tokens_and_ids(cond[f"reference_latents_{slot}"].to(device, dtype), 10 + 10 * slot)
            parts.append(extra)
            part_ids.append(extra_ids)
            slot += 1
        text = cond["prompt_embeds"].to(dtype)
        text_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(text.shape[1]))
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), float(self._setting("train_guidance", 1.0)), device=device, dtype=torch.float32)
        out = self.denoiser(hidden_states=torch.cat(parts, dim=1), encoder_hidden_states=text,
                            timestep=timesteps.to(device).expand(batch).to(dtype) / 1000, img_ids=torch.cat(part_ids, dim=1),
                            txt_ids=text_ids.unsqueeze(0).expand(batch, -1, -1).to(device), guidance=guidance,
                            return_dict=False)[0]
        grid = out[:, : tokens.shape[1]].permute(0, 2, 1).reshape(batch, -1, height // 2, width // 2)
        return unpatchify(grid)

    def noise_schedule(self) -> NoiseSchedule:
        config = self.pipe.scheduler.config
        return NoiseSchedule("flowmatch", "flow", int(config.num_train_timesteps), shift=float(config.get("shift", 1.0)),
                             resolution_shift=ResolutionShift.from_scheduler_config(config))

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        targets = {self.denoiser_name: list(TRANSFORMER_TARGETS)}
        if train_text_encoder:
            targets["text_encoder"] = list(QWEN_TARGETS)
        return targets

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        """Sequence length, the size, the references, and (Klein with CFG) the negative prompts' embeddings."""
        first = batch[0]
        kwargs: dict[str, Any] = {"max_sequence_length": self.max_sequence_length, "width": first.width, "height": first.height}
        if first.references:
            kwargs["image"] = [image.convert("RGB") for image in first.references]
        if first.guidance_scale > 1 and not self.denoiser.config.guidance_embeds and any(r.negative_prompt for r in batch):
            kwargs["negative_prompt_embeds"] = self.encode_prompts([r.negative_prompt for r in batch])["prompt_embeds"]
        return kwargs

    def pipeline_inputs(self, batch: "list[GenerateRequest]", generators: list[Any]) -> tuple[Any, dict[str, Any]]:
        """img2img (diffusers has no FLUX.2 img2img pipeline): the init images noised to the schedule's sigma at
        ``strength`` (at least the last step), then the rest of the schedule through the txt2img pipeline, which
        shifts the sigmas it is given (their pre-images are passed)."""
        import math

        import numpy as np
        import torch
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        first = batch[0]
        if first.init_image is None:
            return super().pipeline_inputs(batch, generators)
        steps = first.steps
        kept = max(1, min(steps, int(steps * first.strength)))
        tokens = (first.height // 16) * (first.width // 16)
        full = np.linspace(1.0, 1 / steps, steps)
        shift = math.exp(compute_empirical_mu(tokens, steps))
        shifted = shift * full / (1 + (shift - 1) * full)
        tail = shifted[steps - kept:]
        again = math.exp(compute_empirical_mu(tokens, kept))
        init = self.encode_images(pil_to_pixels([_cover(r.init_image, (first.width, first.height)) for r in batch]))
        noise = torch.cat([torch.randn(init[:1].shape, generator=g).to(init.device, init.dtype) for g in generators])
        start = (1 - tail[0]) * init + tail[0] * noise
        return self.pipe, {"sigmas": list(tail / (again - (again - 1) * tail)), "num_inference_steps": kept,
                           "latents": patchify(start.to(self.denoiser_dtype))}


def _cover(image: Any, size: tuple[int, int]) -> Any:
    """``image`` scaled to cover ``size`` and centre-cropped (how init images are fitted)."""
    from toolkit.data.buckets import fit_image, place

    return fit_image(image.convert("RGB"), place(image.size, size))
