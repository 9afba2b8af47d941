"""A ModelAdapter built around one diffusers pipeline: loading, VAE, sampling, txt2img and img2img, with ControlNets
and IP-Adapters (``toolkit.models.attachments``).

Architectures subclass ``PipelineAdapter`` (their ArchSpec names the diffusers pipeline classes) and implement
the math that differs (prompt encoding, the denoiser call, the noise schedule, LoRA targets, how their ControlNet
pipelines take control images). Nothing here knows an architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.config.messages import suggest
from toolkit.devices import resolve_dtype
from toolkit.errors import EaselError
from toolkit.models import memory, vae_tiling
from toolkit.models.attachments import Attachments
from toolkit.models.base import ControlInput, GenerateRequest, ModelAdapter, NoiseSchedule
from toolkit.models.loading import (ModelSource, diffusers_class, load_denoiser, load_denoiser_file_pipeline, load_pipeline,
                                    load_vae, resolve_file, resolve_source)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.config.blocks import ModelConfig
    from toolkit.registry import ArchRef


def pil_to_pixels(images: "list[Image.Image]") -> "torch.Tensor":
    """RGB PIL images of one size -> float tensor (B, 3, H, W) in [-1, 1]."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def pixels_to_pil(pixels: "torch.Tensor") -> "list[Image.Image]":
    """Float tensor (B, 3, H, W) in [-1, 1] -> RGB PIL images (rounded like diffusers' image processor)."""
    import numpy as np
    from PIL import Image

    array = ((pixels.detach().float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((image * 255).round().astype(np.uint8)) for image in array]


def ddpm_schedule(scheduler_config: Any, prediction_type: str | None) -> NoiseSchedule:
    """The DDPM schedule (betas -> alphas_cumprod) a scheduler config describes."""
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(scheduler_config)
    kind = prediction_type or ddpm.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise EaselError(f"unsupported prediction type '{kind}' in the model's scheduler config; set model.prediction_type.")
    return NoiseSchedule("ddpm", kind, ddpm.config.num_train_timesteps, alphas_cumprod=ddpm.alphas_cumprod.clone())


class PipelineAdapter(ModelAdapter):
    """An adapter whose components live in one diffusers pipeline (``self.pipe``).

    ``load`` places the components (see ``toolkit.models.memory``): quantization, ``low_vram`` and layer
    offloading happen there, around ``after_load``; the constructor leaves every component where it is.
    """

    img2img_class: ClassVar[str]
    """Name of the img2img pipeline class in diffusers (built with ``from_pipe``, sharing components); the
    txt2img one is the ArchSpec's ``pipeline``."""
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    supports_assistant_lora: ClassVar[bool] = False
    """Whether ``model.assistant_lora_path`` (a training adapter merged at load) means anything here."""
    model_kwargs_keys: ClassVar[tuple[str, ...]] = ("config",)
    """Keys this architecture reads from ``model.model_kwargs`` (``config``: where a single file's configs come from)."""
    vae_class: ClassVar[str] = "AutoencoderKL"
    """diffusers class of the VAE (what ``model.vae_path`` is loaded as)."""
    denoiser_file: ClassVar[str] = ""
    """diffusers class of the denoiser when the architecture's single files hold only it (Z-Image, Qwen-Image); the
    other parts then come from ``model_kwargs.config``, else ``default_base``. Empty: single files hold everything."""
    default_base: ClassVar[str] = ""
    """Hub id of the text encoders, tokenizers and VAE for a denoiser-only single file."""
    takes_negative_prompt: ClassVar[bool] = True
    """Whether the pipeline has a ``negative_prompt`` argument (else the architecture's ``call_kwargs`` passes
    negative embeddings itself)."""

    def __init__(self, pipe: Any, config: "ModelConfig", arch: "ArchRef", device: "torch.device", dtype: "torch.dtype"):
        self.pipe = pipe
        self.config = config
        self.arch = arch
        self.device = device
        self.dtype = dtype
        self.denoiser = getattr(pipe, self.denoiser_name)
        self.text_encoders = {name: getattr(pipe, name) for name in self.text_encoder_names}
        self.vae = pipe.vae
        self.attachments = Attachments(self)
        for module in [*self.components().values(), self.vae]:
            module.requires_grad_(False)
            module.eval()
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, config: "ModelConfig", arch: "ArchRef", *, device: "torch.device", dtype: "torch.dtype") -> "PipelineAdapter":
        if config.assistant_lora_path and not cls.supports_assistant_lora:
            raise EaselError(f"model.assistant_lora_path is not supported by architecture '{arch.spec.name}' "
                             "(it is the Z-Image Turbo training adapter).")
        unknown = sorted(set(config.model_kwargs) - set(cls.model_kwargs_keys))
        if unknown:
            raise EaselError(f"model.model_kwargs: unknown key(s) {', '.join(unknown)} for architecture '{arch.spec.name}'"
                             f"{suggest(unknown[0], list(cls.model_kwargs_keys)) or '.'} Valid: {', '.join(cls.model_kwargs_keys)}.")
        source = resolve_source(config, arch)
        components: dict[str, Any] = {}
        if config.vae_path:
            components["vae"] = load_vae(config.vae_path, dtype, source, config.revision, cls.vae_class)
        pipe = cls.load_pipeline(source, config, arch, dtype, components)
        if config.unet_path:
            name = arch.spec.denoiser
            setattr(pipe, name, load_denoiser(config.unet_path, type(getattr(pipe, name)), name, source, dtype))
        for names, precision in (((("vae",)), config.vae_dtype), (cls.text_encoder_names, config.te_dtype)):
            for name in names if precision else ():
                getattr(pipe, name).to(dtype=resolve_dtype(precision))
        return cls.from_pipe(pipe, config, arch, device=device, dtype=dtype)

    @classmethod
    def from_pipe(cls, pipe: Any, config: "ModelConfig", arch: "ArchRef", *, device: "torch.device",
                  dtype: "torch.dtype") -> "PipelineAdapter":
        """An adapter around a pipeline already in memory (e.g. built with random weights), placed as ``load`` does."""
        adapter = cls(pipe, config, arch, device, dtype)
        memory.stage(adapter)
        vae_tiling.configure(adapter.vae, config)
        adapter.after_load()
        if config.lora_path:
            from toolkit.lora_io.apply import bake_loras

            bake_loras(adapter, [(resolve_file(config.lora_path, "model.lora_path"), 1.0)])
        memory.settle(adapter)
        return adapter

    @classmethod
    def load_pipeline(cls, source: ModelSource, config: "ModelConfig", arch: "ArchRef", dtype: "torch.dtype",
                      components: dict[str, Any]) -> Any:
        """Load the pipeline (a denoiser-only single file with the other parts from its base, see ``denoiser_file``)."""
        pipeline_class = diffusers_class(arch.spec.pipeline)
        if source.kind != "file" or not cls.denoiser_file:
            return load_pipeline(pipeline_class, source, dtype, **components)
        return load_denoiser_file_pipeline(pipeline_class, diffusers_class(cls.denoiser_file), arch.spec.denoiser, source,
                                           dtype, cls.base_for(arch), **components)

    @classmethod
    def base_for(cls, arch: "ArchRef") -> str:
        """Where a denoiser-only single file's other parts come from without ``model_kwargs.config``: ``default_base``."""
        return cls.default_base

    def after_load(self) -> None:
        """Adjust the loaded pipeline (prediction type, schedule shift, merged adapters)."""

    def pipeline(self) -> Any:
        return self.pipe

    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor":
        vae = self.vae
        latents = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mode()
        return (latents - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    def decode_latents(self, latents: "torch.Tensor") -> "torch.Tensor":
        vae = self.vae
        latents = latents.to(self.device, vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return vae.decode(latents).sample.clamp(-1, 1)

    def pipeline_guidance(self, guidance_scale: float) -> float:
        """easel's guidance (CFG scale; <= 1 means no guidance) in the pipeline's own convention."""
        return guidance_scale

    def scheduler_overrides(self) -> dict[str, Any]:
        """Settings every sampling scheduler gets on top of the model's scheduler config."""
        return {}

    def call_kwargs(self, batch: list[GenerateRequest]) -> dict[str, Any]:
        """Extra pipeline arguments for one batch (architecture-specific)."""
        return {}

    def generate(self, requests: list[GenerateRequest]) -> "list[Image.Image]":
        import torch

        from toolkit.sampling.samplers import check_sampler

        images: list[Image.Image] = []
        for batch in _batches(requests):
            check_sampler(batch[0].sampler, self.arch.spec.samplers, self.arch.spec.name)
            check_references(batch[0], self.arch)
            with torch.no_grad():
                images += self._generate_batch(batch)
        return images

    def _generate_batch(self, batch: list[GenerateRequest]) -> "list[Image.Image]":
        import torch

        from toolkit.sampling.samplers import make_scheduler

        first = batch[0]
        if first.init_image is not None and first.strength <= 0:
            return self._round_trip([r.init_image for r in batch], first.width, first.height)  # type: ignore[misc]
        self.attachments.set_ip_adapter(first.ip_adapter)
        scheduler = make_scheduler(first.sampler, self.pipe.scheduler.config, **self.scheduler_overrides())
        kwargs: dict[str, Any] = {
            "prompt": [r.prompt for r in batch], "num_inference_steps": first.steps,
            "guidance_scale": self.pipeline_guidance(first.guidance_scale),
            "generator": [torch.Generator("cpu").manual_seed(r.seed) for r in batch], "output_type": "pil",
            **({"negative_prompt": [r.negative_prompt for r in batch]} if self.takes_negative_prompt else {}),
            **self.call_kwargs(batch),
        }
        if first.ip_adapter is not None:
            kwargs["ip_adapter_image"] = [list(first.ip_adapter.images)]
        pipe, inputs = self.pipeline_inputs(batch, kwargs["generator"])
        kwargs = _accepted(pipe, {**kwargs, **inputs})
        original = pipe.scheduler
        pipe.scheduler = scheduler
        pipe.set_progress_bar_config(disable=True)
        try:
            return list(pipe(**kwargs).images)
        except ValueError as err:
            if "strength" in str(err) or "steps" in str(err):
                raise EaselError(f"cannot generate: {err}") from err
            raise
        finally:
            pipe.scheduler = original

    def pipeline_inputs(self, batch: list[GenerateRequest], generators: list[Any]) -> tuple[Any, dict[str, Any]]:
        """The pipeline for ``batch`` and what it takes besides prompts and sampling settings: the size, or the init
        images and strength; for ControlNets the architecture's ``control_inputs``. Architectures whose img2img has no
        diffusers pipeline override this."""
        first = batch[0]
        inits = None if first.init_image is None else [_fit(r.init_image, (first.width, first.height)) for r in batch]  # type: ignore[arg-type]
        strength = _at_least_one_step(first.strength, first.steps)
        if first.controls:
            profile = self.attachments.profile
            nets = tuple(self.attachments.controlnet(control.source) for control in first.controls)
            controls = _checked_controls(first.controls, nets, profile, self.arch.spec.name)
            if controlnets_union(nets, profile):
                names = (profile.union_txt2img, profile.union_img2img or profile.union_txt2img)
            else:
                names = (profile.txt2img, profile.img2img or profile.txt2img)
            pipe = self.attachments.pipeline(names[inits is not None], nets)
            return pipe, self.control_inputs(pipe, controls, first, inits, strength, generators)
        if inits is None:
            return self.pipe, {"width": first.width, "height": first.height}
        return self.img2img_pipeline(), {"strength": strength, "image": inits}

    def control_inputs(self, pipe: Any, controls: tuple[ControlInput, ...], request: GenerateRequest,
                       inits: "list[Image.Image] | None", strength: float, generators: list[Any]) -> dict[str, Any]:
        """What ``pipe`` (a ControlNet pipeline the architecture names; its img2img one, else its txt2img one, when
        ``inits`` are given) takes for a batch's ``controls`` (union ones with their mode resolved): control images,
        scales, modes, and the size (the batch's first ``request``'s) or the init images with the strength."""
        raise EaselError(f"architecture '{self.arch.spec.name}' takes no ControlNets.")

    def img2img_pipeline(self) -> Any:
        """The img2img pipeline, sharing this adapter's components (made once)."""
        return self.attachments.pipeline(self.img2img_class)

    def _round_trip(self, images: "list[Image.Image]", width: int, height: int) -> "list[Image.Image]":
        """img2img at strength 0: the input through the VAE and back."""
        pixels = pil_to_pixels([_fit(image, (width, height)) for image in images])
        return pixels_to_pil(self.decode_latents(self.encode_images(pixels)))

    def noise_schedule(self) -> NoiseSchedule:
        return ddpm_schedule(self.pipe.scheduler.config, self.config.prediction_type)


def _fit(image: "Image.Image", size: tuple[int, int]) -> "Image.Image":
    from PIL import Image

    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _at_least_one_step(strength: float, steps: int) -> float:
    """A strength that denoises at least once, the last (least noisy) step when ``steps * strength < 1``.

    diffusers' SD img2img pipelines run ``int(steps * strength)`` steps and fail when that is 0; Z-Image's
    rounds up and already runs one. ``1 / steps`` (nudged up where float rounding makes the product < 1)
    gives exactly one step in both.
    """
    import math

    if strength <= 0 or int(steps * strength) >= 1:
        return strength
    least = 1.0 / steps
    while int(steps * least) < 1:
        least = math.nextafter(least, 2.0)
    return least


def check_references(request: GenerateRequest, arch: "ArchRef") -> None:
    """Raise EaselError when the request's reference images do not fit the architecture (or come with an init image)."""
    if not request.references:
        return
    spec = arch.spec.references
    if spec is None:
        raise EaselError(f"architecture '{arch.name}' takes no reference images; edit models do (e.g. flux_kontext, flux2).")
    if len(request.references) > spec.count:
        raise EaselError(f"{len(request.references)} reference images, but architecture '{arch.name}' takes at most {spec.count}.")
    if request.init_image is not None:
        raise EaselError("reference images and an init image (img2img) cannot be used together; give one of them.")


def _accepted(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without the settings ``pipe`` has no parameter for (some ControlNet pipelines lack
    ``guidance_rescale``), which must then be off; an unsupported setting that is on is an error."""
    import inspect

    parameters = inspect.signature(type(pipe).__call__).parameters
    unknown = [key for key in kwargs if key not in parameters]
    used = [key for key in unknown if kwargs[key] not in (None, 0, 0.0, False)]
    if used:
        raise EaselError(f"{', '.join(used)} cannot be used with {type(pipe).__name__} (diffusers' pipeline for this kind of "
                         "generation); remove it for these images.")
    return {key: value for key, value in kwargs.items() if key not in unknown}


def _batch_key(request: GenerateRequest) -> tuple:
    return (request.width, request.height, request.steps, request.guidance_scale, request.sampler, request.guidance_rescale,
            request.init_image is None, request.strength, tuple(sorted((k, repr(v)) for k, v in request.extras.items())),
            request.controls, request.ip_adapter, tuple(id(image) for image in request.references))


def _batches(requests: list[GenerateRequest]) -> list[list[GenerateRequest]]:
    """Consecutive requests that can share one pipeline call (reference images included: the same ones)."""
    batches: list[list[GenerateRequest]] = []
    for request in requests:
        if batches and _batch_key(batches[-1][0]) == _batch_key(request):
            batches[-1].append(request)
        else:
            batches.append([request])
    return batches


def controlnets_union(nets: tuple[Any, ...], profile: Any) -> bool:
    """Whether ``nets`` are union ControlNets; mixing them with plain ones is an error (no pipeline takes both)."""
    from toolkit.models.controlnets import is_union

    kinds = {is_union(net, profile) for net in nets}
    if len(kinds) > 1:
        raise EaselError(f"controlnets: union ControlNets ({profile.union_model}) and plain ones ({profile.model}) cannot "
                         "be used together; use only union ones, or only plain ones.")
    return kinds == {True}


def _checked_controls(controls: tuple[ControlInput, ...], nets: tuple[Any, ...], profile: Any,
                      arch: str) -> tuple[ControlInput, ...]:
    """The controls with union ControlNets' modes resolved (default: the one of the control image's preprocessor),
    or a clear error for what the architecture's pipelines cannot take (the jobs check these before loading)."""
    from dataclasses import replace

    from toolkit.models.controlnets import is_union

    if profile.max_models and len(controls) > profile.max_models:
        raise EaselError(f"controlnets: '{arch}' takes at most {profile.max_models} ControlNet(s) per image, got {len(controls)}.")
    if not profile.guidance_window and any((c.start, c.end) != (0.0, 1.0) for c in controls):
        raise EaselError(f"controlnets: '{arch}' ControlNets act on every step; start and end cannot be set.")
    resolved = []
    for control, net in zip(controls, nets):
        if not is_union(net, profile):
            if control.mode is not None:
                raise EaselError(f"controlnets: '{control.source.path}' is not a union ControlNet; it takes no mode.")
            resolved.append(control)
            continue
        mode = control.mode if control.mode is not None else profile.union_modes.get(control.kind)
        if mode is None:
            raise EaselError(f"controlnets: '{control.source.path}' is a union ControlNet and preprocess '{control.kind}' "
                             f"names no control mode; set mode ({', '.join(profile.union_modes)}).")
        resolved.append(replace(control, mode=mode))
    return tuple(resolved)
