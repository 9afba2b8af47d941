"""Qwen-Image adapter: Qwen2.5-VL text encoder, MMDiT transformer on packed latents, flow matching.

Conventions of diffusers' QwenImagePipeline / QwenImageTransformer2DModel that this adapter hides:
- the VAE is a video VAE: pixels go in as (B, 3, 1, H, W), and its latents are normalised per channel with
  ``latents_mean`` / ``latents_std`` from its config (no scaling factor); ``encode_images`` returns (B, 16, H/8, W/8);
- the transformer takes the latents packed into 2x2 patches, (B, H/2 * W/2, 64), with ``img_shapes`` for RoPE, and
  its timestep is sigma (t / 1000); it predicts the velocity ``noise - x0`` directly, as the contract says;
- prompts are wrapped in the pipeline's template (a system prompt, then the user turn); the last hidden states
  are kept, minus the template's first tokens (``prompt_template_encode_start_idx``);
- the scheduler shifts its timesteps by the image size (``use_dynamic_shifting``, mu from the packed token
  count), and training draws its timesteps with the same shift (``NoiseSchedule.resolution_shift``);
- CFG is the pipeline's ``true_cfg_scale`` (``neg + s (pos - neg)``, then rescaled to the conditional norm), which
  is easel's guidance_scale; the pipeline's own ``guidance_scale`` is for guidance-distilled models and unused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.errors import EaselError
from toolkit.models.pipeline_adapter import PipelineAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, GenerateRequest, ImageInfo, NoiseSchedule

BLOCK_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_v_proj",
                 "img_mlp.net.0.proj", "img_mlp.net.2"]
TEXT_STREAM_TARGETS = ["attn.add_q_proj", "attn.to_add_out", "txt_mlp.net.0.proj", "txt_mlp.net.2"]
"""Layers that only feed a block's text output. The last block's text output is discarded (the transformer returns
the image stream), so there they would never get a gradient, and DistributedDataParallel refuses such parameters."""


class QwenImageAdapter(PipelineAdapter):
    """Qwen-Image; denoiser name and pipeline class come from ``extensions/qwen_image/spec.py``. Conditioning:
    ``prompt_embeds`` (B, L, D) padded with zeros to ``max_sequence_length`` and ``prompt_mask`` (B, L)."""

    img2img_class: ClassVar[str] = "QwenImageImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    model_kwargs_keys: ClassVar[tuple[str, ...]] = ("config", "flow_shift", "max_sequence_length")
    vae_class: ClassVar[str] = "AutoencoderKLQwenImage"
    denoiser_file: ClassVar[str] = "QwenImageTransformer2DModel"
    default_base: ClassVar[str] = "Qwen/Qwen-Image"
    quantize_exclusions = ("time_text_embed", "img_in", "txt_in", "norm_out", "proj_out")

    @property
    def max_sequence_length(self) -> int:
        """Prompt tokens kept after the template (the pipeline's default 512; at most 1024)."""
        return int(self.config.model_kwargs.get("max_sequence_length", 512))

    @property
    def flow_shift(self) -> float | None:
        """``model_kwargs.flow_shift``: a fixed timestep shift instead of the resolution-dependent one."""
        shift = self.config.model_kwargs.get("flow_shift")
        return None if shift is None else float(shift)

    @property
    def patch(self) -> int:
        return int(self.denoiser.config.patch_size)

    def text_pipeline(self) -> Any:
        """The pipeline whose prompt template text-only prompts are encoded with (Qwen-Image's own)."""
        return self.pipe

    def encode_prompts(self, prompts: list[str], references: "list[list[torch.Tensor]] | None" = None) -> "Conditioning":
        return self.padded(self.text_rows(prompts))

    def text_rows(self, prompts: list[str]) -> "list[torch.Tensor]":
        """Each prompt's last hidden states (L_i, D) in the template, minus its first tokens, as the pipeline keeps them."""
        pipe = self.text_pipeline()
        drop = pipe.prompt_template_encode_start_idx
        tokens = pipe.tokenizer([pipe.prompt_template_encode.format(p) for p in prompts], padding=True, truncation=True,
                                max_length=pipe.tokenizer_max_length + drop, return_tensors="pt")
        keep = tokens.attention_mask.to(self.device).bool()
        encoder = self.text_encoders["text_encoder"]
        hidden = encoder(input_ids=tokens.input_ids.to(self.device), attention_mask=keep, output_hidden_states=True).hidden_states[-1]
        return [row[real][drop:drop + self.max_sequence_length] for row, real in zip(hidden, keep)]

    def padded(self, rows: "list[torch.Tensor]") -> "Conditioning":
        """Prompt rows (L_i, D) -> ``prompt_embeds`` zero-padded to ``max_sequence_length`` and their ``prompt_mask``."""
        import torch

        length = self.max_sequence_length
        embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
        for index, row in enumerate(rows):
            embeds[index, :len(row)] = row
            mask[index, :len(row)] = True
        return {"prompt_embeds": embeds, "prompt_mask": mask}

    def reference_latents(self, cond: "Conditioning") -> "list[torch.Tensor]":
        """Latents appended to the image tokens (the edit models' references); none for text-to-image."""
        return []

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        import torch

        dtype, p = self.denoiser_dtype, self.patch
        b, c, h, w = noisy_latents.shape
        latents = [noisy_latents, *self.reference_latents(cond)]
        tokens = torch.cat([pack(x.to(dtype), p) for x in latents], dim=1)
        embeds, mask = text_of(cond)
        out = self.denoiser(
            hidden_states=tokens, encoder_hidden_states=embeds.to(dtype), encoder_hidden_states_mask=mask,
            timestep=(timesteps.float().expand(b) / 1000).to(noisy_latents.device, dtype),
            img_shapes=[[(1, x.shape[-2] // p, x.shape[-1] // p) for x in latents]] * b, return_dict=False)[0]
        seen = (h // p) * (w // p)  # the output keeps the target's tokens; the references' are context
        return out[:, :seen].reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor":
        vae = self.vae
        latents = vae.encode(pixels.to(self.device, vae.dtype).unsqueeze(2)).latent_dist.mode()
        mean, std = self._latent_stats(latents)
        return ((latents - mean) / std).squeeze(2)

    def decode_latents(self, latents: "torch.Tensor") -> "torch.Tensor":
        vae = self.vae
        latents = latents.to(self.device, vae.dtype).unsqueeze(2)
        mean, std = self._latent_stats(latents)
        return vae.decode(latents * std + mean).sample[:, :, 0].clamp(-1, 1)

    def _latent_stats(self, like: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor]":
        """The VAE config's per-channel latent mean and std, shaped (1, C, 1, 1, 1) like ``like``."""
        import torch

        config = self.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        return (torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype),
                torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype))

    def noise_schedule(self) -> "NoiseSchedule":
        from toolkit.models.base import NoiseSchedule, ResolutionShift

        config = self.pipe.scheduler.config
        if self.flow_shift is not None:
            return NoiseSchedule("flowmatch", "flow", int(config.num_train_timesteps), shift=self.flow_shift)
        return NoiseSchedule("flowmatch", "flow", int(config.num_train_timesteps), shift=float(config.get("shift", 1.0)),
                             resolution_shift=ResolutionShift.from_scheduler_config(config, self.patch))

    def scheduler_overrides(self) -> dict[str, Any]:
        return {} if self.flow_shift is None else {"use_dynamic_shifting": False, "shift": self.flow_shift}

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        """Every linear layer of the blocks but the modulations (img_mod / txt_mod), as musubi-tuner trains, except
        the last block's text-stream layers, which affect nothing."""
        if train_text_encoder:
            raise EaselError(f"{self.arch.name}: train.train_text_encoder is not supported; Qwen-Image LoRAs train the "
                             "transformer only (its 7B Qwen2.5-VL text encoder stays frozen). Set it to false.")
        last = len(self.denoiser.transformer_blocks) - 1
        text = [f"transformer_blocks.{index}.{name}" for index in range(last) for name in TEXT_STREAM_TARGETS]
        return {self.denoiser_name: BLOCK_TARGETS + text}

    def generate(self, requests: "list[GenerateRequest]") -> "list[Any]":
        """Images; one step is refused: the scheduler stretches its last sigma to ``shift_terminal``, which turns a
        one-step schedule into NaN (diffusers divides by zero)."""
        if self.pipe.scheduler.config.get("shift_terminal") and any(r.steps < 2 for r in requests):
            raise EaselError(f"{self.arch.name}: sample_steps must be at least 2 (its scheduler's shift_terminal makes a "
                             "one-step schedule NaN); set 2 or more.")
        return super().generate(requests)

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        """easel's guidance is the pipeline's ``true_cfg_scale``; without guidance no negative prompt is encoded. The
        size is given for img2img too (the pipeline would make 1024 x 1024 from any input image)."""
        first = batch[0]
        # the pipeline allows at most 1024 prompt tokens (its tokenizer call never gives more, so rows agree)
        return {"true_cfg_scale": first.guidance_scale, "guidance_scale": None, "max_sequence_length": min(self.max_sequence_length, 1024),
                "negative_prompt": [r.negative_prompt for r in batch] if first.guidance_scale > 1 else None,
                "width": first.width, "height": first.height}


def pack(latents: "torch.Tensor", patch: int) -> "torch.Tensor":
    """(B, C, H, W) -> (B, H/p * W/p, C p^2): patches as tokens, in the pipeline's order."""
    b, c, h, w = latents.shape
    grid = latents.view(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def text_of(cond: "Conditioning") -> "tuple[torch.Tensor, torch.Tensor | None]":
    """The prompt embeddings cut to the batch's longest prompt, and their mask (None when no token is padding, as
    the pipeline passes it). Padding past the longest prompt changes nothing: masked tokens are never attended to
    and the text's RoPE positions count from its first token."""
    mask = cond["prompt_mask"].bool()
    length = max(mask.any(dim=0).nonzero().shape[0], 1)  # rows are prefixes; shapes, so the meta device works too
    mask = mask[:, :length]
    padded = (~mask).nonzero().shape[0] > 0
    return cond["prompt_embeds"][:, :length], mask if padded else None
