"""FLUX.1 adapter (dev, schnell) and FLUX.1 Kontext: T5-XXL + CLIP-L, double/single-stream DiT, flow matching.

Conventions of diffusers' FluxPipeline / FluxTransformer2DModel that this adapter hides:
- the transformer takes 2x2 patches as tokens: latents (B, 16, h, w) are packed to (B, h/2 * w/2, 64) with a
  position id (0, row, column) per token, and the prompt's T5 tokens get ids (0, 0, 0);
- its timestep input is sigma (t / 1000) and it predicts ``noise - x0``, the contract's target, directly;
- dev is guidance-distilled: a ``guidance`` value (3.5 for samples, ``train_guidance`` = 1.0 in training, as
  ai-toolkit and SimpleTuner train) feeds an embedding; schnell's transformer has none. easel's ``guidance_scale``
  is that value, as in diffusers, ai-toolkit and ComfyUI; a negative prompt acts only with real CFG
  (``model_kwargs.true_cfg_scale`` > 1, two passes per step);
- the sampling shift depends on the image size (``use_dynamic_shifting``); training follows it through the
  NoiseSchedule's ``resolution_shift`` read from the same scheduler config;
- Kontext: the reference image's latents are packed the same way and appended to the image tokens with ids
  (1, row, column); only the target's tokens of the output are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.base import NoiseSchedule, ResolutionShift
from toolkit.models.pipeline_adapter import PipelineAdapter

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import Conditioning, GenerateRequest, ImageInfo
    from toolkit.registry import ArchRef

BLOCK_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                 "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                 "ff_context.net.2", "proj_mlp"]
"""Attention and MLP layers of the double-stream blocks and the single-stream ones (their output layer, named
``proj_out`` like the model's final layer, is added per block)."""
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
DEFAULT_BASE = {"dev": "black-forest-labs/FLUX.1-dev", "schnell": "black-forest-labs/FLUX.1-schnell"}
"""Where text encoders, tokenizers and VAE come from when name_or_path is a transformer-only single file."""


def pack(latents: "torch.Tensor") -> "torch.Tensor":
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): 2x2 patches as tokens, in FluxPipeline's order."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: "torch.Tensor", height: int, width: int) -> "torch.Tensor":
    """The inverse of ``pack`` for latents of ``height`` x ``width``."""
    b, _, channels = tokens.shape
    grid = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, channels // 4, height, width)


def position_ids(height: int, width: int, index: int, device: "torch.device", dtype: "torch.dtype") -> "torch.Tensor":
    """(h/2 * w/2, 3) token positions (index, row, column) of packed latents of ``height`` x ``width``."""
    import torch

    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxAdapter(PipelineAdapter):
    """FLUX.1. Conditioning: ``prompt_embeds`` (B, L, D) T5 states padded to ``max_sequence_length`` and
    ``pooled_prompt_embeds`` (B, P), CLIP's pooled output."""

    img2img_class: ClassVar[str] = "FluxImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")
    denoiser_file: ClassVar[str] = "FluxTransformer2DModel"
    model_kwargs_keys: ClassVar[tuple[str, ...]] = ("config", "max_sequence_length", "train_guidance", "true_cfg_scale")
    quantize_exclusions = ("x_embedder", "context_embedder", "time_text_embed", "norm_out", "[p]roj_out")
    """The embedders and the final layer (``[p]roj_out``, a glob, is the model's own ``proj_out`` only: the single blocks'
    output layers share its name and are quantized)."""

    @classmethod
    def base_for(cls, arch: "ArchRef") -> str:
        """Single files hold only the transformer (as Black Forest Labs publish it); the rest comes from
        ``model_kwargs.config``, else this variant's hub repository."""
        return DEFAULT_BASE.get(arch.variant, DEFAULT_BASE["dev"])

    def _setting(self, key: str, fallback: Any) -> Any:
        """``model_kwargs[key]``, else the variant's default, else ``fallback``."""
        return self.config.model_kwargs.get(key, self.arch.defaults.get(key, fallback))

    @property
    def max_sequence_length(self) -> int:
        return int(self._setting("max_sequence_length", 512))

    @property
    def train_guidance(self) -> float:
        """The guidance embedding's value in training (dev); schnell has no guidance embedding."""
        return float(self._setting("train_guidance", 1.0))

    def encode_prompts(self, prompts: list[str], references: "list[list[torch.Tensor]] | None" = None) -> "Conditioning":
        clip, t5 = self.pipe.tokenizer, self.pipe.tokenizer_2
        clip_ids = clip(prompts, padding="max_length", max_length=clip.model_max_length, truncation=True, return_tensors="pt").input_ids
        t5_ids = t5(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt").input_ids
        pooled = self.text_encoders["text_encoder"](clip_ids.to(self.device), output_hidden_states=False).pooler_output
        embeds = self.text_encoders["text_encoder_2"](t5_ids.to(self.device), output_hidden_states=False)[0]
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _reference_tokens(self, cond: "Conditioning", dtype: "torch.dtype") -> "tuple[torch.Tensor, torch.Tensor] | None":
        """Extra image tokens and their ids (Kontext's reference); None for FLUX.1."""
        return None

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        import torch

        dtype, device = self.denoiser_dtype, noisy_latents.device
        batch, _, height, width = noisy_latents.shape
        tokens = pack(noisy_latents.to(dtype))
        ids = position_ids(height, width, 0, device, dtype)
        extra = self._reference_tokens(cond, dtype)
        hidden = tokens if extra is None else torch.cat([tokens, extra[0]], dim=1)
        img_ids = ids if extra is None else torch.cat([ids, extra[1]], dim=0)
        text = cond["prompt_embeds"].to(dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), self.train_guidance, device=device, dtype=torch.float32)
        out = self.denoiser(hidden_states=hidden, timestep=timesteps.to(device).expand(batch).to(dtype) / 1000,
                            guidance=guidance, pooled_projections=cond["pooled_prompt_embeds"].to(dtype),
                            encoder_hidden_states=text, txt_ids=torch.zeros(text.shape[1], 3, device=device, dtype=dtype),
                            img_ids=img_ids, return_dict=False)[0]
        return unpack(out[:, : tokens.shape[1]], height, width)

    def noise_schedule(self) -> NoiseSchedule:
        config = self.pipe.scheduler.config
        return NoiseSchedule("flowmatch", "flow", int(config.num_train_timesteps), shift=float(config.get("shift", 1.0)),
                             resolution_shift=ResolutionShift.from_scheduler_config(config))

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        single = [f"single_transformer_blocks.{i}.proj_out" for i in range(len(self.denoiser.single_transformer_blocks))]
        targets = {self.denoiser_name: BLOCK_TARGETS + single}
        if train_text_encoder:
            targets["text_encoder"] = list(CLIP_TARGETS)
        return targets

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        """Sequence length, true CFG, and the size also for img2img (FluxImg2ImgPipeline defaults to 1024 px)."""
        return {"max_sequence_length": self.max_sequence_length, "width": batch[0].width, "height": batch[0].height,
                "true_cfg_scale": float(self.config.model_kwargs.get("true_cfg_scale", 1.0))}


class FluxKontextAdapter(FluxAdapter):
    """FLUX.1 Kontext: FLUX.1 plus one reference image, in the conditioning as ``reference_latents`` (B, 16, h, w)."""

    def with_references(self, cond: "Conditioning", references: "list[torch.Tensor]") -> "Conditioning":
        return {**cond, "reference_latents": references[0]}

    def _reference_tokens(self, cond: "Conditioning", dtype: "torch.dtype") -> "tuple[torch.Tensor, torch.Tensor] | None":
        reference = cond.get("reference_latents")
        if reference is None:
            return None
        height, width = reference.shape[-2:]
        return pack(reference.to(dtype)), position_ids(height, width, 1, reference.device, dtype)

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        """The reference fitted to the output size (scaled to cover, centre-cropped) as in training; none: txt2img.
        The pipeline's ``max_area`` is the requested size's, so it keeps that size."""
        from toolkit.data.buckets import fit_image, place

        kwargs = super().call_kwargs(batch)
        first = batch[0]
        if first.init_image is None:
            kwargs["max_area"] = first.width * first.height  # the pipeline scales any size to this area
        if first.references:
            size = (first.width, first.height)
            kwargs.update(image=fit_image(first.references[0].convert("RGB"), place(first.references[0].size, size)),
                          _auto_resize=False)
        return kwargs
