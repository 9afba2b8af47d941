"""Z-Image adapter (Turbo, base, De-Turbo): Qwen3 text encoder, single-stream DiT, flow matching.

Conventions of diffusers' ZImagePipeline / ZImageTransformer2DModel that this adapter hides:
- the transformer takes lists: one latent (C, 1, H, W) and one caption (L_i, D) per image, the
  caption cut to its real tokens (no padding);
- its timestep input is ``(1000 - t) / 1000`` = 1 - sigma (0 = pure noise), not sigma;
- its output is ``x0 - noise``; the pipeline negates it before the Euler step. ``predict`` returns
  ``noise - x0`` (the velocity of x_t = (1 - sigma) x0 + sigma noise), as the contract says;
- prompts are wrapped in Qwen3's chat template and encoded to the second-to-last hidden states;
- diffusers' guidance g means ``pos + g (pos - neg)``; easel's guidance_scale is the usual CFG
  scale (``neg + s (pos - neg)``, none when s <= 1), so the pipeline gets ``s - 1``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from extensions.z_image.original import zimage_to_original
from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.models.base import NoiseSchedule
from toolkit.models.loading import resolve_file
from toolkit.models.pipeline_adapter import PipelineAdapter, diffusers_class

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.models.base import Conditioning, ControlInput, GenerateRequest, ImageInfo

TRANSFORMER_TARGETS = ["attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                       "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]
"""Attention and feed-forward layers of every transformer block (refiners included)."""
QWEN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_BASE = "Tongyi-MAI/Z-Image-Turbo"
"""Where text encoder, tokenizer and VAE come from when name_or_path is a transformer-only single file (Z-Image is
distributed as one)."""


class ZImageAdapter(PipelineAdapter):
    """Z-Image; denoiser name and pipeline class come from ``extensions/z_image/spec.py``. Conditioning: ``prompt_embeds`` (B, L, D) padded to ``max_sequence_length`` and ``prompt_mask`` (B, L)."""

    img2img_class: ClassVar[str] = "ZImageImg2ImgPipeline"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    supports_assistant_lora: ClassVar[bool] = True
    model_kwargs_keys: ClassVar[tuple[str, ...]] = ("config", "flow_shift", "max_sequence_length")
    transformer_blocks = ("layers",)
    quantize_exclusions = ("t_embedder", "cap_embedder", "all_x_embedder", "all_final_layer", "adaLN_modulation")
    denoiser_file: ClassVar[str] = "ZImageTransformer2DModel"
    default_base: ClassVar[str] = DEFAULT_BASE

    def single_file_state_dict(self) -> "dict[str, torch.Tensor]":
        """The transformer in the original layout (Z-Image is distributed as a transformer-only file)."""
        return zimage_to_original(self.denoiser.state_dict())

    @property
    def max_sequence_length(self) -> int:
        return int(self.config.model_kwargs.get("max_sequence_length", 512))

    @property
    def flow_shift(self) -> float:
        """Timestep shift: ``model_kwargs.flow_shift``, else the variant's, else the scheduler config's."""
        shift = self.config.model_kwargs.get("flow_shift", self.arch.defaults.get("flow_shift"))
        return float(shift if shift is not None else self.pipe.scheduler.config.get("shift", 1.0))

    def after_load(self) -> None:
        self._assistant: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._assistant_hooks: list[Any] = []
        if self.config.assistant_lora_path:
            self.merge_assistant(self.config.assistant_lora_path)

    def encode_prompts(self, prompts: list[str]) -> "Conditioning":
        tokenizer = self.pipe.tokenizer
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True, enable_thinking=True) for p in prompts]
        tokens = tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device).bool()
        encoder = self.text_encoders["text_encoder"]
        hidden = encoder(input_ids=tokens.input_ids.to(self.device), attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        return {"prompt_embeds": hidden * mask.unsqueeze(-1).to(hidden.dtype), "prompt_mask": mask}

    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: "Conditioning",
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        import torch

        dtype = self.denoiser_dtype
        latents = list(noisy_latents.to(dtype).unsqueeze(2).unbind(dim=0))
        mask = cond["prompt_mask"].bool()
        captions = [row[keep].to(dtype) for row, keep in zip(cond["prompt_embeds"], mask)]
        t_model = (1000.0 - timesteps.float().expand(noisy_latents.shape[0])) / 1000.0
        out = self.denoiser(latents, t_model.to(noisy_latents.device), captions, return_dict=False)[0]
        return -torch.stack(out, dim=0).squeeze(2)

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule("flowmatch", "flow", int(self.pipe.scheduler.config.num_train_timesteps), shift=self.flow_shift)

    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        targets = {self.denoiser_name: list(TRANSFORMER_TARGETS)}
        for name in self.trained_text_encoders() if train_text_encoder else []:
            targets[name] = list(QWEN_TARGETS)
        return targets

    def pipeline_guidance(self, guidance_scale: float) -> float:
        return max(guidance_scale - 1.0, 0.0)

    def scheduler_overrides(self) -> dict[str, Any]:
        return {"shift": self.flow_shift}

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        return {"max_sequence_length": self.max_sequence_length}

    def control_inputs(self, pipe: Any, controls: "tuple[ControlInput, ...]", request: "GenerateRequest",
                       inits: "list[Image.Image] | None", strength: float, generators: list[Any]) -> dict[str, Any]:
        """``ZImageControlNetPipeline`` takes one ControlNet (its images through the VAE) and has no img2img form:
        img2img starts it from the init images noised as ``ZImageImg2ImgPipeline`` does, on the rest of the steps."""
        (control,) = controls
        kwargs: dict[str, Any] = {"control_image": control.image, "controlnet_conditioning_scale": control.scale,
                                  "width": request.width, "height": request.height}
        if inits is not None:
            kwargs.update(self._img2img_start(pipe, inits, request.steps, strength, generators))
        return kwargs

    def _img2img_start(self, pipe: Any, inits: "list[Image.Image]", steps: int, strength: float,
                       generators: list[Any]) -> dict[str, Any]:
        """The remaining sigmas and the noised init latents: ZImageImg2ImgPipeline's start (its latents sampled from
        the VAE, then noise, from each image's generator), for a pipeline that takes ``sigmas`` and ``latents``."""
        import torch
        from diffusers.pipelines.z_image.pipeline_z_image_img2img import calculate_shift, retrieve_latents
        from diffusers.utils.torch_utils import randn_tensor

        from toolkit.sampling.samplers import make_scheduler

        sigmas = torch.linspace(1.0, 1 / steps, steps).tolist()[int(max(steps - min(steps * strength, steps), 0)):]
        pixels = pipe.image_processor.preprocess(inits).to(self.device, self.dtype)
        vae = self.vae
        latents = torch.cat([retrieve_latents(vae.encode(pixels[i:i + 1]), generator=generators[i]) for i in range(len(inits))])
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        noise = torch.cat([randn_tensor((1, *latents.shape[1:]), generator=g, device=self.device, dtype=self.dtype) for g in generators])
        scheduler = make_scheduler(self.arch.spec.default_sampler, self.pipe.scheduler.config, **self.scheduler_overrides())
        config = scheduler.config
        mu = calculate_shift((latents.shape[-2] // 2) * (latents.shape[-1] // 2), config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5), config.get("max_shift", 1.15))
        scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=self.device)
        sigma = scheduler.sigmas[0].to(self.dtype)
        return {"sigmas": sigmas, "latents": sigma * noise + (1.0 - sigma) * latents}

    def generate(self, requests: "list[GenerateRequest]") -> list[Any]:
        """Images with the assistant adapter (if any) switched off: Turbo plus the user's LoRAs."""
        with self.assistant_off():
            return super().generate(requests)

    def merge_assistant(self, path: str) -> None:
        """Merge a training adapter (e.g. ostris' Z-Image Turbo de-distillation LoRA) into the transformer."""
        import torch

        file = resolve_file(path, "model.assistant_lora_path", None)
        state = diffusers_class(self.arch.spec.pipeline).lora_state_dict(str(file))
        pairs = {key.removeprefix("transformer.").removesuffix(".lora_A.weight"): key for key in state if key.endswith(".lora_A.weight")}
        if not pairs:
            raise EaselError(f"model.assistant_lora_path: '{path}' holds no LoRA weights this loader understands.")
        for name, down_key in pairs.items():
            layer = self._linear(name, path)
            down, up = state[down_key].float(), state[down_key.replace(".lora_A.", ".lora_B.")].float()
            with torch.no_grad():
                layer.weight.copy_((layer.weight.float() + (up @ down).to(layer.weight.device)).to(layer.weight.dtype))
            self._assistant[name] = (down, up)
        log.info(f"Merged the assistant adapter {file} into {len(pairs)} transformer layers")

    def _linear(self, name: str, path: str) -> "torch.nn.Linear":
        try:
            module = self.denoiser.get_submodule(name)
        except AttributeError:
            raise EaselError(f"model.assistant_lora_path: '{path}' targets '{name}', which this transformer does not have.") from None
        return getattr(module, "base_layer", module)

    @property
    def assistant_active(self) -> bool:
        """Whether the merged assistant adapter acts (it always does, except inside ``assistant_off``)."""
        return not self._assistant_hooks

    def set_assistant_active(self, active: bool) -> None:
        """Switch the merged assistant on, or off by adding it again at weight -1 (``-B A x`` per layer)."""
        import torch.nn.functional as F

        if active or not self._assistant:
            for handle in self._assistant_hooks:
                handle.remove()
            self._assistant_hooks = []
            return
        if self._assistant_hooks:
            return
        for name, (down, up) in self._assistant.items():
            def undo(module: Any, args: tuple, output: "torch.Tensor", down: "torch.Tensor" = down, up: "torch.Tensor" = up) -> "torch.Tensor":
                x = args[0]
                return output - F.linear(F.linear(x, down.to(x.device, x.dtype)), up.to(x.device, x.dtype))
            self._assistant_hooks.append(self._linear(name, "").register_forward_hook(undo))

    @contextmanager
    def assistant_off(self) -> Iterator[None]:
        """Inside: the assistant adapter is applied at -1 (cancelled); afterwards as it was."""
        was_active = self.assistant_active
        self.set_assistant_active(False)
        try:
            yield
        finally:
            self.set_assistant_active(was_active)
