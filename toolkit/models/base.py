"""THE contract every architecture implements: ``ModelAdapter``.

The trainer, the data caches, the generate job and the LoRA tools only talk to a model through
this class, so ``toolkit/`` never needs to know which architecture it holds. An architecture is
a package under ``extensions/`` whose adapter subclasses ``ModelAdapter``; the facts other parts need
without loading it (denoiser name, pipeline class, tiny model, LoRA naming) are its ``ArchSpec``, which
the adapter reads (``self.arch.spec``) instead of declaring them again.

Conventions shared by every adapter:
- pixels are float tensors in [-1, 1], shape (B, 3, H, W); latents are already scaled/shifted
  for the denoiser (``encode_images`` applies the VAE scaling, ``decode_latents`` undoes it);
- a ``Conditioning`` is a dict of batch-first tensors (padded to a fixed length, with masks
  where lengths vary), so one row can be cached per caption and rows stacked again later;
- timesteps follow ``NoiseSchedule``: for ``ddpm`` integer steps in [0, num_train_timesteps),
  for ``flowmatch`` ``sigma * num_train_timesteps`` (float) with x_t = (1 - sigma) x0 + sigma noise;
- ``predict`` returns what the schedule's ``prediction_type`` names: epsilon, v (SD), or
  ``noise - x0`` for flow matching.

Reference images (edit models; the ArchSpec's ``references`` says how many and how they are sized): in training
the data layer pairs each target with its references (``datasets[].control_path``), encodes them with
``encode_images`` (cached like the targets' latents) and hands them to ``with_references``, which adds them to the
conditioning under the keys ``predict`` reads; ``predict``'s signature stays the same. Where the text encoder
reads them too (``ReferenceImages.text_encoder_sees``), ``encode_prompts`` gets their pixels. In sampling they
arrive as ``GenerateRequest.references`` (PIL images), which the adapter gives its pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from toolkit.models.vae_tiling import tiling_tag

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.config.blocks import ModelConfig
    from toolkit.network.targets import NetworkLayout
    from toolkit.registry import ArchRef

Conditioning = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class NoiseSchedule:
    """The forward noising process a denoiser was trained with (a math family, not an architecture)."""

    kind: Literal["ddpm", "flowmatch"]
    prediction_type: Literal["epsilon", "v_prediction", "flow"]
    num_train_timesteps: int = 1000
    alphas_cumprod: "torch.Tensor | None" = None
    """ddpm: cumulative product of alphas, one per training timestep."""
    shift: float = 1.0
    """flowmatch: timestep shift, sigma' = shift * s / (1 + (shift - 1) * s)."""
    resolution_shift: "ResolutionShift | None" = None
    """flowmatch: a shift that grows with the image's token count instead of ``shift`` (FLUX, Qwen-Image)."""


@dataclass(frozen=True)
class ResolutionShift:
    """A resolution-dependent timestep shift (diffusers' ``use_dynamic_shifting``): ``shift = exp(mu)``, mu linear in
    the image's token count, from ``base_shift`` at ``base_seq_len`` tokens to ``max_shift`` at ``max_seq_len``."""

    base_seq_len: int = 256
    max_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15
    patch_size: int = 2
    """Latent pixels per token side (tokens = (h / patch) * (w / patch))."""

    @classmethod
    def from_scheduler_config(cls, config: Any, patch_size: int = 2) -> "ResolutionShift | None":
        """The shift a diffusers FlowMatchEulerDiscreteScheduler config describes; None without dynamic shifting."""
        if not config.get("use_dynamic_shifting"):
            return None
        return cls(int(config.get("base_image_seq_len", 256)), int(config.get("max_image_seq_len", 4096)),
                   float(config.get("base_shift", 0.5)), float(config.get("max_shift", 1.15)), patch_size)

    def shift(self, latent_height: int, latent_width: int) -> float:
        """The shift for latents of this size (what the scheduler's ``mu`` gives the sampling pipeline)."""
        import math

        tokens = (latent_height // self.patch_size) * (latent_width // self.patch_size)
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return math.exp(self.base_shift + slope * (tokens - self.base_seq_len))


@dataclass(frozen=True)
class ImageInfo:
    """Where a training image came from; SDXL-style micro-conditioning reads it, others ignore it."""

    original_size: tuple[int, int]
    """(height, width) of the source image."""
    crop_top_left: tuple[int, int]
    """(top, left) of the crop, in resized pixels."""
    target_size: tuple[int, int]
    """(height, width) trained at."""


@dataclass(frozen=True)
class ControlNetSource:
    """Where a ControlNet comes from: what an adapter loads (once) for a ``ControlInput``."""

    path: str
    """A hub id, a diffusers folder, or a single file (local or a hub file ``owner/repo/file.safetensors``)."""
    config: str | None = None
    """Single files: a folder or hub id with the ControlNet's config.json (None: diffusers' guess)."""


@dataclass(frozen=True)
class ControlInput:
    """One ControlNet's part in an image: the model, its control image and how strongly and when it steers."""

    source: ControlNetSource
    image: "Image.Image" = field(compare=False)
    """The control image, already preprocessed, at the request's size."""
    image_key: str
    """What the control image is (its file and preprocessing), so requests that share it can share a batch."""
    scale: float = 1.0
    """diffusers' ``controlnet_conditioning_scale``."""
    start: float = 0.0
    """Fraction of the steps after which it acts."""
    end: float = 1.0
    """Fraction of the steps after which it stops."""
    mode: int | None = None
    """Union ControlNets: the control mode's index; None: plain ControlNets, or the mode ``kind`` names."""
    kind: str = "none"
    """The preprocessor that made the control image (union ControlNets' default mode)."""


@dataclass(frozen=True)
class IPAdapterInput:
    """An IP-Adapter and the reference images it reads for an image."""

    path: str
    """The weights file (local, or a hub file ``owner/repo/sub/file.safetensors``)."""
    image_encoder: str | None
    """Its CLIP image encoder (folder, hub id or ``owner/repo/subfolder``); None: ``image_encoder/`` beside the file."""
    images: "tuple[Image.Image, ...]" = field(compare=False)
    images_key: str = ""
    """What the reference images are (their files), so requests that share them can share a batch."""
    scale: float = 0.6


@dataclass
class GenerateRequest:
    """One image to make: txt2img, img2img when ``init_image`` is set, or (edit models) an edit of ``references``;
    ``controls`` (ControlNets) and ``ip_adapter`` steer any of them where the architecture takes them."""

    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    sampler: str
    negative_prompt: str = ""
    guidance_rescale: float = 0.0
    init_image: "Image.Image | None" = None
    strength: float = 1.0
    references: "list[Image.Image]" = field(default_factory=list)
    """Reference images to edit from (architectures whose ArchSpec has ``references``), as they were read; the adapter
    sizes them as its pipeline does. Not together with ``init_image``."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Architecture-specific options (e.g. a second prompt for SDXL)."""
    controls: tuple[ControlInput, ...] = ()
    """ControlNets and their control images (several where the architecture takes several)."""
    ip_adapter: IPAdapterInput | None = None
    """An IP-Adapter with its reference images."""


class ModelAdapter(ABC):
    """One loaded base model. Subclasses set the component attributes in ``load``."""

    arch: "ArchRef"
    config: "ModelConfig"
    device: "torch.device"
    dtype: "torch.dtype"
    denoiser: "torch.nn.Module"
    """The UNet or transformer."""
    text_encoders: "dict[str, torch.nn.Module]"
    """Name (as in diffusers pipelines, e.g. ``text_encoder_2``) -> module."""
    vae: "torch.nn.Module"
    quantize_exclusions: tuple[str, ...] = ()
    """Module-name patterns of the denoiser kept in full precision when quantizing."""
    _denoiser_dtype: "tuple[torch.dtype, torch.dtype] | None" = None

    @classmethod
    @abstractmethod
    def load(cls, config: "ModelConfig", arch: "ArchRef", *, device: "torch.device", dtype: "torch.dtype") -> "ModelAdapter":
        """Load from a hub id, a diffusers folder, a single-file checkpoint or ``tiny:<arch>``."""

    @abstractmethod
    def encode_prompts(self, prompts: list[str], references: "list[list[torch.Tensor]] | None" = None) -> Conditioning:
        """Text -> conditioning tensors (batch-first, on ``self.device``).

        ``references``: per prompt, its reference images as pixels (3, H, W) in [-1, 1], fitted as the ArchSpec's
        ``references`` says; given only to architectures whose text encoder reads them (``text_encoder_sees``).
        """

    @abstractmethod
    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """Pixels in [-1, 1] -> scaled latents."""

    @abstractmethod
    def decode_latents(self, latents: "torch.Tensor") -> "torch.Tensor":
        """Scaled latents -> pixels in [-1, 1]."""

    @abstractmethod
    def noise_schedule(self) -> NoiseSchedule:
        """The training noise schedule and prediction target."""

    @abstractmethod
    def predict(self, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor", cond: Conditioning,
                image_info: "list[ImageInfo] | None" = None) -> "torch.Tensor":
        """One denoiser forward, returning the schedule's prediction target."""

    @abstractmethod
    def lora_targets(self, train_text_encoder: bool) -> dict[str, list[str]]:
        """Default LoRA target module names (suffixes) per component name."""

    transformer_blocks: ClassVar[tuple[str, ...]] = ()
    """Paths of the denoiser's main transformer blocks (``network.transformer_only`` keeps the adapter inside them);
    empty: the option changes nothing (UNets)."""

    def lora_block(self, path: str) -> int | None:
        """kohya's block index (0-24: IN00-IN11, MID, OUT00-OUT11) of a denoiser layer, for ``network.block_dims``;
        None: the architecture has no such blocks (the network's rank applies)."""
        return None

    def network_layout(self) -> "NetworkLayout":
        """What the network needs to know about the denoiser's blocks."""
        from toolkit.network.targets import NetworkLayout

        return NetworkLayout(self.denoiser_name, self.transformer_blocks, self.lora_block)

    def trained_text_encoders(self) -> list[str]:
        """The text encoders an adapter goes on when they are trained: all but those ``model.use_text_encoder_1`` /
        ``use_text_encoder_2`` switch off (the first and second, in order)."""
        switches = (self.config.use_text_encoder_1, self.config.use_text_encoder_2)
        return [name for index, name in enumerate(self.text_encoders) if index >= len(switches) or switches[index]]

    @abstractmethod
    def generate(self, requests: list[GenerateRequest]) -> "list[Image.Image]":
        """Make images (txt2img or img2img, with ControlNets and IP-Adapters where asked) with the components as they
        are now (adapters included)."""

    @abstractmethod
    def pipeline(self) -> Any:
        """A diffusers pipeline sharing this adapter's components (for saving, interop, sampling)."""

    def with_references(self, cond: Conditioning, references: "list[torch.Tensor]") -> Conditioning:
        """``cond`` plus reference latents for ``predict``, in training: ``references`` holds one (B, C, h, w) tensor per
        reference slot (slot i = the i-th ``control_path`` folder), scaled like ``encode_images``' output, on the device.

        Architectures with ``ArchSpec.references`` override this (the config check refuses references for the others).
        """
        from toolkit.errors import EaselError

        raise EaselError(f"architecture '{self.arch.name}' takes no reference images (datasets[].control_path).")

    def single_file_state_dict(self) -> "dict[str, torch.Tensor]":
        """The model in its original single-file layout (what ComfyUI / A1111 load), for merged checkpoints."""
        from toolkit.errors import EaselError

        raise EaselError(f"{self.arch.name} models cannot be written as one single-file checkpoint; "
                         "save the merged model as a diffusers folder instead (save_as: diffusers).")

    @property
    def denoiser_name(self) -> str:
        """The denoiser's name in diffusers pipelines and LoRA files (``unet`` or ``transformer``): its ArchSpec's."""
        return self.arch.spec.denoiser

    def components(self) -> "dict[str, torch.nn.Module]":
        """Modules an adapter may wrap, by name: the denoiser and the text encoders."""
        return {self.denoiser_name: self.denoiser, **self.text_encoders}

    def identity(self, component: str) -> str:
        """A stable id of a component's weights, for cache keys (e.g. 'vae', 'text_encoder').

        Precision and quantization are part of it: a text encoder quantized to 8 bits, or a VAE in fp16,
        gives slightly different outputs, so their caches must not be reused for the other setting.
        """
        cfg = self.config
        source = f"{self.arch.spec.name}|{cfg.name_or_path}|{cfg.revision}"
        if component == "vae":
            return f"{source}|{cfg.vae_path or ''}|vae|{_first_dtype(self.vae)}{tiling_tag(self.vae)}"
        if component == "text_encoder":
            dtypes = ",".join(_first_dtype(module) for module in self.text_encoders.values())
            quantized = cfg.qtype_te if cfg.quantize_te else "none"
            return f"{source}||text_encoder|{dtypes}|{quantized}"
        return f"{source}||{component}"

    @property
    def denoiser_dtype(self) -> "torch.dtype":
        """The dtype the denoiser computes in, cheaply: diffusers' ``ModelMixin.dtype`` walks every module
        (milliseconds per call on a big UNet), so its answer is kept while the first parameter's dtype stays."""
        first = next(self.denoiser.parameters()).dtype
        cached = self._denoiser_dtype
        if cached is None or cached[0] != first:
            cached = (first, getattr(self.denoiser, "dtype", first))
            self._denoiser_dtype = cached
        return cached[1]

    @property
    def bucket_divisibility(self) -> int:
        """Image sides must be multiples of this."""
        return self.arch.spec.bucket_divisibility

    def compile_units(self) -> "list[torch.nn.Module]":
        """The pieces of the denoiser ``train.compile`` compiles one by one: its repeated blocks (what diffusers
        checkpoints in a transformer), so identical ones share the compiled code."""
        from toolkit.models.blocks import blocks

        return [block for _, block in blocks(self.denoiser)]

    def move(self, names: list[str], device: "torch.device | str") -> None:
        """Move components ('vae', 'denoiser', or a text encoder's name) to ``device``."""
        from toolkit.models.offload import move_module

        for name in names:
            module = self.denoiser if name == "denoiser" else self.vae if name == "vae" else self.text_encoders[name]
            move_module(module, device)  # streamed (offloaded) layers stay in CPU memory


def _first_dtype(module: "torch.nn.Module") -> str:
    """The dtype of a module's first floating-point parameter (quantized weights keep their compute dtype)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return str(parameter.dtype).removeprefix("torch.")
    return "none"
