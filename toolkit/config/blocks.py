"""The config blocks shared by jobs: save, datasets, train, model, logging, meta; the network block is
``toolkit.config.network`` and the sample / image blocks ``toolkit.config.sample`` (both importable from here too).

Key names follow ai-toolkit's so its configs run unchanged. Each field's docstring is the
documentation shown in docs/config.md.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator

from toolkit.config.aitoolkit_keys import ARCH_FLAGS
from toolkit.config.base import Block, CaptionExt, Precision, lowercase
from toolkit.config.network import NetworkConfig, NetworkKwargs, NetworkType  # noqa: F401 - the blocks, in one place
from toolkit.config.sample import ImageSettings, SampleConfig, SampleItem, reference_problems, sampler_problems  # noqa: F401 - the blocks, in one place
from toolkit.train.lr import SCHEDULERS
from toolkit.train.optimizers import OPTIMIZERS

OptimizerName = lowercase(Literal[OPTIMIZERS])  # type: ignore[valid-type]
SchedulerName = lowercase(Literal[SCHEDULERS])  # type: ignore[valid-type]
DEFAULT_STEPS = 1000
"""Optimizer steps of a run that sets neither ``train.steps`` nor ``train.epochs``."""
TimestepType = lowercase(Literal["uniform", "linear", "sigmoid", "logit_normal", "shift", "weighted"])
QuantType = lowercase(Literal["qfloat8", "qint8", "qint4", "float8", "int8", "nf4", "fp4", "bnb_int8", "float8_mm"])
LoraFormat = lowercase(Literal["kohya", "comfy", "diffusers", "peft"])


CompileMode = lowercase(Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
"""torch.compile's modes (``train.compile_mode``, ``generate.compile_mode``)."""


class SaveConfig(Block):
    """When and how the trained adapter is written."""

    block_name: ClassVar[str] = "save"
    aitoolkit: ClassVar[bool] = True

    dtype: Precision = Field("fp16", validation_alias=AliasChoices("dtype", "save_dtype"))
    """Precision of the saved weights: fp16, bf16 or fp32."""
    save_every: int | None = Field(1000, ge=1)
    """Save a numbered checkpoint (and training state) every N steps; unset: only the final file."""
    max_step_saves_to_keep: int = Field(5, ge=0)
    """Keep only the newest N numbered checkpoints; 0 keeps all."""
    format: LoraFormat | None = None
    """Key layout of the file: kohya, comfy, diffusers or peft. Default: the architecture's."""
    save_format: lowercase(Literal["safetensors", "diffusers"]) = "safetensors"  # type: ignore[valid-type]
    """With ``train.merge_network_on_save``: the merged model as one .safetensors checkpoint or a diffusers folder
    (a LoRA is one .safetensors file either way)."""


class DatasetConfig(Block):
    """One folder of images with captions, and how it is read."""

    block_name: ClassVar[str] = "datasets[]"
    aitoolkit: ClassVar[bool] = True

    folder_path: str
    """Folder of images (subfolders included, hidden ones not) with same-stem caption files, or a metadata.jsonl/.csv (``file_name``/``image`` and ``text`` columns): in a folder it is read with the rest, given as the path itself it is the whole listing (its folder is the dataset folder)."""
    allow_outside_files: bool = False
    """Let a metadata.jsonl/.csv list images outside the dataset folder (``../x.png``, absolute paths); refused by default."""
    caption_ext: CaptionExt = Field("txt", validation_alias=AliasChoices("caption_ext", "caption_type"))
    """Extension of caption files next to the images (``txt`` or ``.txt``)."""
    default_caption: str = ""
    """Caption used for images that have none (or an empty one)."""
    trigger_word: str | None = None
    """Trigger word for this dataset; defaults to the process's ``trigger_word`` (``""`` turns it off here)."""
    caption_dropout_rate: float = Field(0.0, ge=0, le=1)
    """Probability that a caption is replaced by an empty one (helps guidance-free sampling)."""
    shuffle_tokens: bool = False
    """Shuffle the comma-separated parts of each caption (after ``keep_tokens``)."""
    keep_tokens: int = Field(0, ge=0)
    """With ``shuffle_tokens``: how many leading comma-separated parts stay in place."""
    token_dropout_rate: float = Field(0.0, ge=0, le=1)
    """Probability that each comma-separated part (after ``keep_tokens``) is dropped."""
    cache_latents: bool = False
    """Encode every image once (per bucket and flip) and keep the latents in memory."""
    cache_latents_to_disk: bool = False
    """Encode every image once and keep the latents on disk (under ``cache_dir``; the start of the log names the folder), keyed by image content, bucket, crop, flip and VAE (re-encoded only when one changes)."""
    cache_dir: str | None = None
    """Where disk caches (latents, text embeddings) live; default ``<folder_path>/_latent_cache`` (inside the dataset folder, as ai-toolkit does), or ``<training_folder>/<name>/cache`` when the dataset folder cannot be written (the log says so). ``output/[name]/cache`` keeps them in the run folder always; entries are keyed by content, so datasets may share one."""
    resolution: list[int] = [512]
    """Training resolution(s); several values make multi-resolution aspect buckets. Smaller images are not upscaled: they get smaller buckets."""
    max_aspect_ratio: float = Field(4.0, ge=1)
    """Most elongated bucket (long side / short side); a more elongated image is cropped to it (centered, or at random with ``random_crop``). A side must also hold one latent patch (the architecture's bucket divisibility: 16 px for Z-Image, 64 for SD/SDXL), else the image is skipped."""
    random_crop: bool = False
    """Crop at a random place (new each epoch) instead of the center; not with cached latents."""
    num_repeats: int = Field(1, ge=1)
    """How many times each image appears per epoch."""
    flip_x: bool = False
    """Randomly mirror images horizontally (with cached latents both orientations are encoded)."""
    flip_y: bool = False
    """Randomly mirror images vertically (with cached latents both orientations are encoded)."""
    is_reg: bool = False
    """A regularization set: the trigger word is not added to its captions."""
    random_triggers: list[str] | str = []
    """Words (or a text file with one per line) of which ``random_triggers_max`` are added to each caption at random,
    after the trigger word."""
    random_triggers_max: int = Field(1, ge=0)
    """1: add one of ``random_triggers`` to every caption; N > 1: add between 0 and N of them."""
    square_crop: bool = False
    """Train every image as a ``resolution`` square: scaled so its short side fits (small images are upscaled),
    then cropped."""
    buckets: bool = True
    """Aspect-ratio buckets; false trains every image as a square, as ``square_crop`` does."""
    scale: float = Field(1.0, gt=0, le=1)
    """Treat every image as this much smaller when choosing its bucket (0.5: a 1024px image gets a 512px bucket)."""
    random_scale: bool = False
    """ai-toolkit's switch that crops at a random place (as ``random_crop``)."""
    mask_path: str | None = None
    """Folder of loss masks named like the images (white: full loss, black: ``mask_min_value``); an image without
    one keeps the full loss."""
    alpha_mask: bool = False
    """Use each image's alpha channel as its loss mask (transparent: ``mask_min_value``)."""
    mask_min_value: float = Field(0.0, ge=0, le=1)
    """Loss weight where a mask is black (0: that region teaches nothing)."""
    invert_mask: bool = False
    """Invert the masks (black: full loss)."""
    network_weight: float = 1.0
    """Weight of the adapter while training on this dataset (its batches are kept apart from other weights')."""
    loss_multiplier: float = Field(1.0, ge=0)
    """Weight of this dataset's loss."""
    batch_size: int | None = Field(None, ge=1)
    """Images per step from this dataset (its batches are kept apart from other sizes'); default ``train.batch_size``.
    As in ai-toolkit, e.g. a small dataset of large images at batch 1 beside a large one at batch 4."""
    control_path: list[str] = []
    """Edit pairs (FLUX.1 Kontext, FLUX.2, Qwen-Image-Edit): a folder, or a list of folders, of reference images paired
    with the targets by file name (target ``cat.jpg`` -> ``<folder>/cat.<any image extension>``); the model learns to
    make the target from its references. ``control_path_1`` .. ``_3`` (ai-toolkit's UI keys) add folders in order.
    Targets missing a reference are skipped and counted."""

    @model_validator(mode="before")
    @classmethod
    def _numbered_control_paths(cls, data: Any) -> Any:
        """ai-toolkit's ``control_path_1`` .. ``control_path_3`` are more ``control_path`` folders, in order."""
        if not isinstance(data, dict) or not any(f"control_path_{n}" in data for n in (1, 2, 3)):
            return data
        data = dict(data)
        folders = data.get("control_path") or []
        folders = [folders] if isinstance(folders, str) else list(folders)
        for n in (1, 2, 3):
            folder = data.pop(f"control_path_{n}", None)
            if folder:
                folders.append(folder)
        data["control_path"] = folders
        return data

    @field_validator("control_path", mode="before")
    @classmethod
    def _control_path_list(cls, value: Any) -> Any:
        if value is None or value == "":
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (int, float, str)) else value

    @field_validator("resolution")
    @classmethod
    def _resolution_valid(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one resolution, e.g. 512")
        if any(r < 64 for r in value):
            raise ValueError(f"each resolution must be at least 64, got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _crop_fits_cache(self) -> "DatasetConfig":
        self.random_crop = self.random_crop or self.random_scale
        if self.alpha_mask and self.mask_path:
            raise ValueError("set either alpha_mask or mask_path, not both")
        if self.random_crop and (self.cache_latents or self.cache_latents_to_disk):
            raise ValueError("random_crop cannot be used with cache_latents / cache_latents_to_disk (a cached latent "
                             "holds one crop); turn one of them off")
        return self


class EMAConfig(Block):
    """Exponential moving average of the adapter weights."""

    block_name: ClassVar[str] = "train.ema_config"
    aitoolkit: ClassVar[bool] = True

    use_ema: bool = False
    """Keep an EMA copy of the adapter; samples and saves use it."""
    ema_decay: float = Field(0.99, gt=0, lt=1)
    """EMA decay per step (0.99 to 0.9999 are usual)."""


class TrainConfig(Block):
    """The optimisation: steps, batch, optimizer, schedule, precision and the loss."""

    block_name: ClassVar[str] = "train"
    aitoolkit: ClassVar[bool] = True

    batch_size: int = Field(1, ge=1)
    """Images per step (per device)."""
    steps: int | None = Field(None, ge=1)
    """Optimizer steps to train; default 1000 when ``epochs`` is unset."""
    epochs: int | None = Field(None, ge=1)
    """Train for this many passes over the data instead of a step count."""
    gradient_accumulation: int = Field(1, ge=1, validation_alias=AliasChoices("gradient_accumulation", "gradient_accumulation_steps"))
    """Micro-batches whose gradients are summed into one optimizer step."""
    train_unet: bool = True
    """Train the adapter on the denoiser (UNet or transformer)."""
    train_text_encoder: bool = False
    """Also train the adapter on the text encoder(s)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less memory, about 30% slower."""
    gradient_checkpointing_interval: int = Field(1, ge=1)
    """With ``gradient_checkpointing``: checkpoint one denoiser block in this many (1: every block). 2 keeps half
    the blocks' activations, for faster steps at more memory."""
    noise_scheduler: lowercase(Literal["flowmatch", "ddpm", "ddim", "euler", "lms"]) | None = None  # type: ignore[valid-type]
    """Training noise schedule; must fit the architecture (flowmatch for Z-Image, ddpm for SD). Default: the architecture's."""
    optimizer: OptimizerName = "adamw"
    """The optimizer; the 8-bit ones and lion need bitsandbytes, prodigy (lr about 1.0) prodigyopt."""
    optimizer_params: dict[str, Any] = {}
    """Extra keyword arguments for the optimizer (weight_decay, betas, eps, ...)."""
    lr: float = Field(1e-4, gt=0)
    """Learning rate."""
    unet_lr: float | None = Field(None, gt=0)
    """Learning rate of the denoiser's adapter; default ``lr``."""
    text_encoder_lr: float | None = Field(None, gt=0)
    """Learning rate of the text encoder's adapter; default ``lr``."""
    lr_scheduler: SchedulerName = "constant"
    """How the learning rate changes over the steps; ``constant`` with ``lr_warmup_steps`` warms up first."""
    lr_scheduler_params: dict[str, Any] = {}
    """Extra arguments of the schedule (``num_cycles`` for restarts, ``power`` for polynomial)."""
    lr_warmup_steps: int = Field(0, ge=0)
    """Steps of linear warm-up from 0 to ``lr``."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Clip the gradient norm to this; 0 disables clipping."""
    seed: int = 42
    """Seed of every random choice in training (data order, noise, timesteps)."""
    distributed: lowercase(Literal["ddp", "fsdp"]) = "ddp"  # type: ignore[valid-type]
    """With several processes (``accelerate launch``, ``torchrun``): ``ddp`` gives each device the whole model;
    ``fsdp`` shards the frozen denoiser across them (each holds 1/N of its weights; for bases that do not fit one
    GPU). The adapter is whole on every device either way. Ignored with one process."""
    dtype: Precision = "fp32"
    """Compute precision: bf16, fp16 (with loss scaling) or fp32."""
    timestep_type: TimestepType = "sigmoid"
    """How training timesteps are drawn: uniform (alias linear), sigmoid, logit_normal, shift or weighted."""
    content_or_style: lowercase(Literal["content", "style", "balanced"]) = "balanced"  # type: ignore[valid-type]
    """style favours low-noise timesteps (texture, colour), content high-noise ones (layout), balanced neither."""
    loss_type: lowercase(Literal["mse", "huber", "l1"]) = "mse"  # type: ignore[valid-type]
    """Loss between prediction and target."""
    huber_c: float = Field(0.1, gt=0)
    """Huber loss threshold (with ``loss_type: huber``)."""
    min_snr_gamma: float | None = Field(None, gt=0, validation_alias=AliasChoices("min_snr_gamma", "snr_gamma"))
    """Min-SNR loss weighting for SD models (5 is usual); ``snr_gamma`` is accepted too."""
    noise_offset: float = Field(0.0, ge=0)
    """Add this much per-channel offset noise (helps very dark/bright images)."""
    ema_config: EMAConfig = EMAConfig()
    """EMA of the adapter weights."""
    force_first_sample: bool = False
    """Make the previews before the first step also when a run continues from a saved state."""
    diff_output_preservation: bool = False
    """Prior preservation (DOP): each caption with the trigger word replaced by ``diff_output_preservation_class``
    must keep the base model's prediction on the same noisy latents; needs a trigger word."""
    diff_output_preservation_multiplier: float = Field(1.0, ge=0)
    """Weight of the DOP loss."""
    diff_output_preservation_class: str = ""
    """The class word for DOP, e.g. ``woman`` (the trigger word is replaced by it)."""
    blank_prompt_preservation: bool = False
    """Prior preservation of the empty prompt: with it the adapter must keep the base model's prediction."""
    blank_prompt_preservation_multiplier: float = Field(1.0, ge=0)
    """Weight of that loss."""
    inverted_mask_prior: bool = False
    """Outside a dataset's loss mask, pull the prediction towards the base model's for the same caption."""
    inverted_mask_prior_multiplier: float = Field(0.5, ge=0)
    """Weight of that loss."""
    reg_weight: float = Field(1.0, ge=0)
    """Loss weight of regularization datasets (``is_reg``)."""
    merge_network_on_save: bool = False
    """Save the base model with the adapter merged in (``save.save_format``) instead of the LoRA: a fresh copy of the
    base is loaded on the CPU at each save; training goes on with the same adapter (the state files keep it)."""
    merge_network_on_save_strength: float = 1.0
    """Weight of the adapter merged on save."""
    skip_first_sample: bool = False
    """Do not sample before the first step."""
    disable_sampling: bool = False
    """Never sample during training."""
    cache_text_embeddings: bool = False
    """Encode every caption once and keep the embeddings on disk."""
    unload_text_encoder: bool = False
    """With cached text embeddings: move the text encoder off the device during training (previews bring it back
    only for a prompt it has not encoded yet)."""
    compile: bool = False
    """torch.compile the denoiser blocks: faster steps after a minute or so of compiling (Z-Image at 1024 on an
    H100: 0.65 -> 0.41 s/step); needs Triton on CUDA."""
    compile_mode: CompileMode = "default"  # type: ignore[valid-type]
    """With ``compile``: torch.compile's mode. ``reduce-overhead`` also records each compiled block in CUDA graphs (one
    per bucket shape), replayed without launching its kernels one by one: for models whose step is bound by kernel
    launches (SDXL's many small layers); ``max-autotune`` also searches matmul kernels (longer compiling). On the
    CPU every mode compiles as ``default`` does."""
    working_copies: bool | None = None
    """bf16/fp16 copies of the float32 adapter weights for the forward and backward pass, refreshed once per step
    (instead of autocast casting every layer's weights and gradients); the optimizer still updates float32.
    Default: on with ``dtype`` bf16/fp16 for lora/locon on one process (same results, fewer kernels)."""
    flat_optimizer: bool | None = None
    """With working copies: the optimizer steps one flat tensor per parameter group instead of every adapter tensor
    (SDXL rank 16: 1 instead of 1,444; bitsandbytes' 8-bit optimizers and Prodigy spend their host time per tensor).
    For adamw, adam, adamw8bit, adam8bit, lion, lion8bit and prodigy: the same numbers, except that the 8-bit ones
    keep tensors under 4,096 values in 8 bits too. Default: on with bf16 on a GPU; on the CPU for adamw and adam only.
    A checkpoint's optimizer state resumes only with the same setting."""

    exclusive_keys: ClassVar[tuple[tuple[str, str], ...]] = (("steps", "epochs"),)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "TrainConfig":
        for first, second in self.exclusive_keys:
            if getattr(self, first) is not None and getattr(self, second) is not None:
                raise ValueError(f"set either {first} or {second}, not both")
        if self.timestep_type == "linear":
            self.timestep_type = "uniform"
        return self

    def total_steps(self, batches_per_epoch: int) -> int:
        """The run's optimizer steps: ``steps``, or ``epochs`` passes over ``batches_per_epoch`` batches (the one
        count the dry run's plan and the trainer use). Batches run on across epochs, so the batches accumulated
        into one step may straddle two epochs: 5 batches x 3 epochs at accumulation 2 are 8 steps."""
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * batches_per_epoch / self.gradient_accumulation))
        return self.steps if self.steps is not None else DEFAULT_STEPS


class ModelConfig(Block):
    """The base model: where it comes from, its architecture, precision and memory options."""

    block_name: ClassVar[str] = "model"
    aitoolkit: ClassVar[bool] = True

    name_or_path: str
    """A hub id, a local diffusers folder, a single .safetensors checkpoint, or ``tiny:<arch>`` (a tiny built-in model)."""
    arch: str
    """Architecture, optionally with a variant: sd15, sdxl, zimage, zimage:turbo, ... (see docs/config.md)."""
    dtype: Precision | None = None
    """Precision the base weights are loaded in; default: ``train.dtype`` (or bf16 when generating)."""
    vae_path: str | None = None
    """A separate VAE (hub id, folder or file), e.g. the fp16-fix SDXL VAE."""
    vae_dtype: Precision | None = None
    """Precision of the VAE; default: ``dtype``'s (e.g. fp32 for an SDXL VAE that overflows in fp16)."""
    vae_tiling: bool = False
    """Encode and decode images in overlapping tiles of ``vae_tile_size`` pixels: the VAE's memory at 1024 px and above
    is that of one tile (a quarter at 1024 px with 512 px tiles), for slightly different pixels where the tiles meet."""
    vae_tile_size: int = Field(512, ge=16, multiple_of=8)
    """With ``vae_tiling``: the side of a tile in pixels (a quarter of it overlaps the next tile); images no larger
    than one tile are encoded and decoded whole."""
    te_dtype: Precision | None = None
    """Precision of the text encoders; default: ``dtype``'s."""
    unet_path: str | None = None
    """Load the denoiser (UNet or transformer) from this diffusers folder, hub id or single file instead of the one
    in ``name_or_path`` (e.g. a fine-tuned UNet with the base model's text encoders and VAE)."""
    lora_path: str | None = None
    """A LoRA merged into the base weights before training (or generating): training then starts from base + LoRA."""
    use_text_encoder_1: bool = True
    """With ``train.train_text_encoder``: put the adapter on the first text encoder."""
    use_text_encoder_2: bool = True
    """With ``train.train_text_encoder``: put the adapter on the second text encoder (SDXL)."""
    prediction_type: lowercase(Literal["epsilon", "v_prediction"]) | None = None  # type: ignore[valid-type]
    """SD models: what the UNet predicts; default: read from the model's scheduler config."""
    allow_pickle: bool = False
    """Allow .ckpt/.pt checkpoints (pickle files). They are then loaded with weights_only=True."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to load."""
    quantize: bool = False
    """Quantize the denoiser's weights (see ``qtype``); adapter layers stay in full precision."""
    qtype: QuantType = "qfloat8"
    """Denoiser quantization: qfloat8/qint8/qint4 (optimum-quanto), float8/int8 (torchao), nf4/fp4/bnb_int8 (bitsandbytes),
    float8_mm (float8 weights and float8 matmuls, forward and backward: faster steps on an sm_89+ GPU)."""
    quantize_te: bool = False
    """Quantize the text encoder(s) (see ``qtype_te``)."""
    qtype_te: QuantType = "qfloat8"
    """Text encoder quantization type; same choices as ``qtype``."""
    low_vram: bool = False
    """Load and quantize block by block, and keep the denoiser off the GPU until it is used."""
    layer_offloading: bool = Field(False, validation_alias=AliasChoices("layer_offloading", "auto_memory"))
    """Keep part of the denoiser's blocks in CPU memory and stream them to the GPU when used."""
    layer_offloading_fraction: float = Field(1.0, ge=0, le=1, validation_alias=AliasChoices("layer_offloading_fraction", "layer_offloading_transformer_percent"))
    """With ``layer_offloading``: the fraction of denoiser blocks kept in CPU memory."""
    layer_offloading_text_encoder_fraction: float = Field(1.0, ge=0, le=1, validation_alias=AliasChoices(
        "layer_offloading_text_encoder_fraction", "layer_offloading_text_encoder_percent"))
    """With ``layer_offloading``: the fraction of each text encoder's layers kept in CPU memory and streamed to the GPU
    while it encodes, so the GPU never holds a whole encoder beside the denoiser (0 keeps the encoders on the GPU)."""
    extras_name_or_path: str | None = None
    """With a single-file checkpoint that holds only the denoiser (a Z-Image transformer file): the diffusers folder or
    hub id the other parts (text encoder, tokenizer, VAE, configs) come from; same as ``model_kwargs.config``."""
    assistant_lora_path: str | None = None
    """Z-Image Turbo training adapter: merged for training, switched off for preview samples."""
    inference_lora_path: str | None = None
    """A LoRA applied only when generating (previews, the generate job), never trained through."""
    model_kwargs: dict[str, Any] = {}
    """Extra arguments for the architecture's loader."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_flags(cls, data: Any, info: ValidationInfo) -> Any:
        """ai-toolkit's boolean architecture flags (declared by each architecture) select ``arch``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.pop("is_v_pred", False) and "prediction_type" not in data:
            data["prediction_type"] = "v_prediction"
        registry = (info.context or {}).get("registry")
        flags = registry.legacy_arch_flags() if registry is not None else {}
        flagged = any(key in data for key in ARCH_FLAGS)
        chosen = [flags[key] for key in list(data) if key in flags and data.pop(key)]
        if chosen and "arch" not in data:
            data["arch"] = chosen[0]
        default = registry.legacy_default_arch() if registry is not None else None
        if flagged and "arch" not in data and default and not any(data.get(key) for key in ARCH_FLAGS):
            data["arch"] = default
            info.context.setdefault("warnings", []).append(
                f"model.arch: not set, and every ai-toolkit is_* flag is false, which ai-toolkit reads as {default}; "
                f"training {default} (write arch: {default} to say so)")
        return data

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str, info: ValidationInfo) -> str:
        registry = (info.context or {}).get("registry")
        if registry is None:
            return value
        try:
            return registry.arch(value).name
        except LookupError as err:
            raise ValueError(str(err)) from None


class LoraRef(Block):
    """One LoRA file and its weight (generation stacks, evaluation variants, merges)."""

    block_name: ClassVar[str] = "loras[]"

    path: str
    """A LoRA file (.safetensors, any supported layout), a hub file ``owner/repo/file.safetensors``, or (generate) a
    name found in ``lora_dirs``."""
    weight: float = 1.0
    """Multiplier of its update (h = Wx + weight * BAx); may be negative or above 1."""


class LoggingConfig(Block):
    """Progress output and experiment trackers."""

    block_name: ClassVar[str] = "logging"
    aitoolkit: ClassVar[bool] = True

    log_every: int = Field(1, ge=1)
    """Write to TensorBoard / wandb every N steps (loss.csv gets every step)."""
    log_dir: str | None = None
    """Write TensorBoard logs here (e.g. ``output/tensorboard``)."""
    use_wandb: bool = False
    """Also log to Weights & Biases (needs ``pip install wandb`` and a login)."""
    project_name: str = "easel"
    """wandb project."""
    run_name: str | None = None
    """wandb run name; default the job name."""
    verbose: bool = False
    """Print more detail while running."""


class MetaConfig(Block):
    """Free-form facts about the job, copied into saved files' metadata."""

    block_name: ClassVar[str] = "meta"

    name: str | None = None
    """Name recorded in metadata (``[name]`` is the job name)."""
    version: str | None = None
    """Version of this model."""
    description: str | None = None
    """What this model does."""
    author: str | None = None
    """Who made it."""
    license: str | None = None
    """License of the trained weights."""
    tags: list[str] = []
    """Free-form tags."""
    extra: dict[str, Any] = {}
    """Any other facts, kept as given (ai-toolkit's examples write trigger_words, creator, ...); a key spelt very close
    to one above (``versio``) is still a typo error."""

    @model_validator(mode="before")
    @classmethod
    def _free_form(cls, data: Any) -> Any:
        """Keys that are no field and no near-miss of one go to ``extra``."""
        import difflib

        if not isinstance(data, dict):
            return data
        fields = [name for name in cls.model_fields if name != "extra"]
        free = {key: value for key, value in data.items() if key not in cls.model_fields
                and not difflib.get_close_matches(str(key), fields, n=1, cutoff=0.8)}
        if not free:
            return data
        kept = {key: value for key, value in data.items() if key not in free}
        return {**kept, "extra": {**dict(kept.get("extra") or {}), **free}}

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value
