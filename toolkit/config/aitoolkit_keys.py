"""Every config key ai-toolkit reads (ostris/ai-toolkit 27a03a91), block by block, and what easel does with it.

Facts (names and ai-toolkit's defaults) come from ai-toolkit's config classes (``toolkit/config_modules.py``),
the ``get_conf`` reads of its train processes, its network's keyword arguments and its web UI's job configs;
the meanings are ours. ``toolkit.config.aitoolkit`` applies the table; docs/aitoolkit_keys.md is generated from it.

Statuses:

- ``implemented``: an easel key of the block (a field or another spelling of one), or moved to ``easel`` (a path
  from the process, e.g. ``train.compile``). ``caveat``: a warning of its own when the value differs from the default.
- ``ignored``: no effect on the trained LoRA (web UI, speed, logging, parts of features that are off); named in
  the one warning line.
- ``warned``: ignored, and a value other than ai-toolkit's default gets a warning of its own (``why``).
- ``refused``: easel does not do it, and ignoring it would train a different LoRA: at ai-toolkit's default it is
  named in the warning line; any other value is an error.
- ``other_arch``: only for architectures easel does not train (``arch``): at the default ignored, else an error
  naming the architectures easel has. ``model.is_*`` flags an architecture declares (``legacy_flags``) select it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMPLEMENTED, IGNORED, WARNED, REFUSED, OTHER_ARCH = "implemented", "ignored", "warned", "refused", "other_arch"
STATUSES = (IMPLEMENTED, IGNORED, WARNED, REFUSED, OTHER_ARCH)
UNSET = object()
"""``easel_default`` when easel's default is ai-toolkit's."""


@dataclass(frozen=True)
class Same:
    """A default that is another key's value in the same block (ai-toolkit: ``unet_lr`` defaults to ``lr``)."""

    key: str

    def __repr__(self) -> str:
        return f"same as {self.key}"


@dataclass(frozen=True)
class Key:
    """One key ai-toolkit reads."""

    name: str
    default: Any
    status: str
    meaning: str
    easel: str | None = None
    """implemented: easel's path when it differs from the key (``train.compile``, ``model.arch``)."""
    easel_default: Any = UNSET
    """implemented: easel's default where it is not ai-toolkit's."""
    note: str | None = None
    """warned: why it is ignored; other_arch: the architectures it is for; implemented: a caveat."""


def impl(name: str, default: Any, meaning: str, easel: str | None = None, easel_default: Any = UNSET,
         caveat: str | None = None) -> Key:
    return Key(name, default, IMPLEMENTED, meaning, easel, easel_default, caveat)


def ign(name: str, default: Any, meaning: str) -> Key:
    return Key(name, default, IGNORED, meaning)


def warn(name: str, default: Any, meaning: str, why: str) -> Key:
    return Key(name, default, WARNED, meaning, note=why)


def refuse(name: str, default: Any, meaning: str) -> Key:
    return Key(name, default, REFUSED, meaning)


def other(name: str, default: Any, meaning: str, arch: str) -> Key:
    return Key(name, default, OTHER_ARCH, meaning, note=arch)


_PREVIEW = "it changes previews only, not the LoRA"
_VIDEO = "video models"
_CFG_NORM = ("Qwen-Image previews run diffusers' pipeline, which always normalises guided predictions (as the "
             "official code does); other architectures never do; it changes previews only")

PROCESS = (
    impl("type", None, "process kind; sd_trainer and diffusion_trainer mean easel's lora_trainer"),
    ign("name", None, "a name for this process (default: the job's); easel names runs after config.name"),
    ign("performance_log_every", 0, "print timing statistics every N steps"),
    impl("training_seed", None, "seed of the run", easel="train.seed", easel_default=42),
    impl("training_folder", "output", "folder the run folder is made in"),
    impl("log_dir", None, "TensorBoard log folder", easel="logging.log_dir"),
    impl("device", "cuda", "device to train on", easel_default="auto"),
    impl("trigger_word", None, "word that calls up the concept; replaces [trigger], added to captions"),
    impl("network", None, "the adapter to train"),
    impl("train", {}, "optimisation settings"),
    impl("model", {}, "the base model"),
    impl("save", {}, "when and how the adapter is saved"),
    impl("sample", {}, "preview images during training"),
    warn("first_sample", None, "other preview settings for the samples made before training", _PREVIEW),
    impl("logging", {}, "progress output and trackers"),
    refuse("guidance", None, "guided training towards/away from prompt pairs (a different training objective)"),
    impl("datasets", None, "image folders to train on"),
    refuse("embedding", None, "also train a textual-inversion embedding"),
    refuse("decorator", None, "train a decorator (learned prompt tokens)"),
    refuse("adapter", None, "train a T2I / IP / ControlNet / custom adapter instead of (or besides) a LoRA"),
    refuse("do_lorm", False, "LoRM: replace layers with low-rank modules (not an additive LoRA)"),
    ign("lorm_extract_mode", "ratio", "LoRM: how ranks are picked (only with do_lorm)"),
    ign("lorm_extract_mode_param", 0.25, "LoRM: the parameter of that choice (only with do_lorm)"),
    ign("torch_profiler", False, "run the PyTorch profiler"),
    ign("sqlite_db_path", "./aitk_db.db", "the web UI's job database"),
    ign("monitoring", None, "the web UI's resource monitor settings"),
)

NETWORK = (
    impl("type", "lora", "adapter kind (lora, locon, lokr, dora, ...)"),
    impl("rank", None, "old spelling of linear (wins over linear in ai-toolkit)", easel="linear"),
    impl("linear", 4, "rank on linear layers", easel_default=16),
    impl("conv", None, "rank on 3x3 convolutions (LoCon)"),
    impl("alpha", 1.0, "old spelling of linear_alpha", easel="linear_alpha"),
    impl("linear_alpha", Same("alpha"), "alpha of linear layers; the update is scaled by alpha/rank",
         easel_default=Same("linear")),
    impl("conv_alpha", Same("conv"), "alpha of convolution layers"),
    impl("dropout", None, "dropout inside the adapter"),
    impl("network_kwargs", {}, "extra network settings (module filters, per-block ranks, ...)"),
    ign("lorm", None, "LoRM settings (only with type lorm, which easel does not have)"),
    impl("transformer_only", True, "adapt only the transformer blocks (Z-Image: layers.*, not the refiners or "
         "embedders); no effect on SD UNets"),
    impl("lokr_full_rank", True, "LoKr: train the second Kronecker factor at full rank", easel_default=False),
    impl("lokr_factor", -1, "LoKr: the Kronecker factor; -1 picks the most balanced"),
    warn("old_lokr_format", False, "write LoKr files with lycoris_ key names",
         "easel writes LoKr in the kohya / comfy / diffusers layouts (save.format); the weights are the same"),
    ign("split_multistage_loras", True, "one LoRA per stage of two-stage models (only Wan 2.2 has stages)"),
    ign("layer_offloading", False, "offload adapter weights to the CPU (unfinished in ai-toolkit)"),
    impl("pretrained_lora_path", None, "start from this LoRA file"),
    refuse("all_layers", False, "also train full-weight differences of layers that are not linear or conv (norms, ...)"),
)

NETWORK_KWARGS = (
    impl("ignore_if_contains", None, "skip modules whose name contains one of these"),
    impl("only_if_contains", None, "adapt only modules whose name contains one of these"),
    impl("full_if_contains", None, "train matching layers as full weight differences instead of low-rank ones"),
    impl("rank_dropout", None, "drop rank components of the update at random while training"),
    impl("module_dropout", None, "skip whole adapter modules at random while training"),
    impl("block_dims", None, "kohya per-block ranks of the UNet's linear layers (ai-toolkit accepts them but does not "
         "apply them; easel does, as kohya)"),
    impl("block_alphas", None, "kohya per-block alphas of the UNet's linear layers"),
    impl("conv_block_dims", None, "kohya per-block ranks of the UNet's 3x3 convolutions"),
    impl("conv_block_alphas", None, "kohya per-block alphas of the UNet's 3x3 convolutions"),
    refuse("modules_dim", None, "a rank per module name (how kohya rebuilds a network from a file)"),
    refuse("modules_alpha", None, "an alpha per module name"),
    refuse("parameter_threshold", 0.0, "skip modules with fewer parameters than this"),
    refuse("attn_only", False, "adapt only attention layers"),
    refuse("full_train_in_out", False, "train the denoiser's input and output layers fully"),
    impl("peft_format", False, "write lora_A / lora_B keys without alpha tensors, training with alpha = rank"),
    refuse("target_lin_modules", None, "module classes whose linear layers are adapted"),
    refuse("target_conv_modules", None, "module classes whose 3x3 convolutions are adapted"),
    ign("varbose", False, "print every module the network wraps"),
    refuse("use_cp", False, "LyCORIS: CP-decompose convolution adapters"),
)

SAVE = (
    impl("save_every", 1000, "save a numbered checkpoint every N steps"),
    impl("dtype", "float16", "precision of the saved weights", easel_default="fp16"),
    impl("max_step_saves_to_keep", 5, "keep only the newest N numbered checkpoints"),
    impl("save_format", "safetensors", "file layout of merged-model saves (diffusers folder or one file); a LoRA "
        "is one .safetensors either way"),
    warn("push_to_hub", False, "upload the saves to the Hugging Face Hub",
         "easel does not upload; the files stay in the run folder"),
    ign("hf_repo_id", None, "the Hub repository to upload to (with push_to_hub)"),
    ign("hf_private", False, "make that repository private (with push_to_hub)"),
)

LOGGING = (
    impl("log_every", 100, "write to the trackers every N steps", easel_default=1),
    impl("verbose", False, "print more detail"),
    impl("use_wandb", False, "log to Weights & Biases"),
    ign("use_ui_logger", False, "send progress to the web UI"),
    impl("project_name", "ai-toolkit", "wandb project", easel_default="easel"),
    impl("run_name", None, "wandb run name"),
)

SAMPLE = (
    impl("sampler", "ddpm", "preview sampler", easel_default=None),
    impl("sample_every", 100, "make previews every N steps", easel_default=250),
    impl("sample_start_step", 0, "make no periodic previews before this step"),
    impl("width", 512, "preview width"),
    impl("height", 512, "preview height"),
    impl("neg", False, "negative prompt of previews", easel_default=""),
    impl("seed", 0, "seed of the first preview"),
    impl("walk_seed", False, "count the seed up from preview to preview"),
    impl("guidance_scale", 7, "classifier-free guidance of previews", easel_default=None),
    impl("sample_steps", 20, "denoising steps of previews", easel_default=None),
    impl("network_multiplier", 1, "weight of the adapter in previews"),
    impl("guidance_rescale", 0.0, "rescale guided noise (SD)"),
    impl("format", "jpg", "image format of previews", easel_default="png"),
    ign("adapter_conditioning_scale", 1.0, "strength of a T2I adapter in previews (adapters are not trained here)"),
    ign("refiner_start_at", 0.5, "where the SDXL refiner takes over in previews (no refiner here)"),
    ign("extra_values", [], "extra conditioning numbers for adapters and sliders"),
    other("num_frames", 1, "frames per preview (video)", _VIDEO),
    ign("fps", 16, "frames per second of video previews"),
    impl("prompts", [], "preview prompts (older spelling of samples)"),
    impl("samples", None, "preview prompts, each with its own settings"),
    warn("do_cfg_norm", False, "normalise guided predictions in previews",
         _CFG_NORM),
)

SAMPLE_ITEM = (
    impl("prompt", None, "the preview prompt"),
    impl("width", Same("sample.width"), "width of this preview"),
    impl("height", Same("sample.height"), "height of this preview"),
    impl("neg", Same("sample.neg"), "negative prompt of this preview"),
    impl("seed", None, "seed of this preview"),
    impl("guidance_scale", Same("sample.guidance_scale"), "guidance of this preview"),
    impl("sample_steps", Same("sample.sample_steps"), "denoising steps of this preview"),
    ign("fps", Same("sample.fps"), "frames per second (video)"),
    other("num_frames", 1, "frames of this preview (video)", _VIDEO),
    impl("ctrl_img", None, "control image of this preview (easel: the image sample.controlnets[ctrl_idx] reads)"),
    impl("ctrl_idx", 0, "which control input ctrl_img feeds (easel: an index into sample.controlnets)"),
    impl("ctrl_img_1", Same("ctrl_img"), "first control image (multi-control models; easel: edit models' first reference image)"),
    impl("ctrl_img_2", None, "second control image (multi-control models; easel: edit models' second reference image)"),
    impl("ctrl_img_3", None, "third control image (multi-control models; easel: edit models' third reference image)"),
    impl("network_multiplier", Same("sample.network_multiplier"), "adapter weight in this preview"),
    warn("do_cfg_norm", False, "normalise guided predictions in this preview",
         _CFG_NORM),
)

EMA = (
    impl("use_ema", False, "keep an exponential moving average of the adapter"),
    impl("ema_decay", 0.999, "EMA decay per step", easel_default=0.99),
    refuse("use_feedback", False, "feed the EMA difference back into the trained weights"),
    refuse("param_multiplier", 1.0, "multiply the weights by this after each update (a reverse weight decay)"),
)

_PRESERVE = "prior preservation"
TRAIN = (
    impl("noise_scheduler", "ddpm", "training noise schedule", easel_default=None),
    impl("content_or_style", "balanced", "which timesteps are favoured: content (high noise), style (low) or neither"),
    impl("steps", 1000, "optimizer steps to train (easel: 1000 when neither steps nor epochs is set)", easel_default=None),
    impl("lr", 1e-6, "learning rate", easel_default=1e-4),
    impl("unet_lr", Same("lr"), "learning rate of the denoiser's adapter"),
    impl("text_encoder_lr", Same("lr"), "learning rate of the text encoders' adapter"),
    ign("refiner_lr", Same("lr"), "learning rate of the SDXL refiner (no refiner here)"),
    ign("embedding_lr", Same("lr"), "learning rate of an embedding (embeddings are not trained here)"),
    ign("adapter_lr", Same("lr"), "learning rate of an adapter (adapters are not trained here)"),
    impl("optimizer", "adamw", "optimizer name"),
    impl("optimizer_params", {}, "extra optimizer arguments"),
    impl("lr_scheduler", "constant", "learning-rate schedule"),
    impl("lr_scheduler_params", {}, "extra schedule arguments"),
    refuse("min_denoising_steps", 0, "lowest training timestep"),
    refuse("max_denoising_steps", 999, "highest training timestep"),
    impl("batch_size", 1, "images per step"),
    impl("dtype", "fp32", "compute precision"),
    ign("xformers", False, "use xformers attention (easel uses PyTorch's scaled-dot-product attention)"),
    ign("sdp", False, "use scaled-dot-product attention (easel always does)"),
    ign("attention_backend", "native", "diffusers attention backend (speed only)"),
    impl("train_unet", True, "train the adapter on the denoiser"),
    impl("train_text_encoder", False, "train the adapter on the text encoders"),
    ign("train_refiner", True, "train the SDXL refiner too (only with model.refiner_name_or_path)"),
    refuse("train_turbo", False, "train for few-step sampling (turbo objective)"),
    ign("show_turbo_outputs", False, "save debug images of the turbo objective"),
    impl("min_snr_gamma", None, "Min-SNR loss weighting"),
    impl("snr_gamma", None, "another spelling of min_snr_gamma", easel="min_snr_gamma"),
    refuse("learnable_snr_gos", False, "learn a timestep loss weighting while training"),
    impl("noise_offset", 0.0, "per-channel offset noise"),
    impl("skip_first_sample", False, "make no previews before the first step"),
    impl("force_first_sample", False, "make the first previews even when resuming"),
    impl("gradient_checkpointing", True, "recompute activations in the backward pass"),
    refuse("weight_jitter", 0.0, "add noise to the adapter weights while training"),
    impl("merge_network_on_save", False, "save the base model with the LoRA merged in instead of the LoRA",
         caveat="easel merges into a fresh copy of the base at each save and keeps training the same adapter; "
                "ai-toolkit merges into the trained model and restarts the adapter from zero"),
    impl("merge_network_on_save_strength", 1.0, "weight of the LoRA merged on save"),
    impl("max_grad_norm", 1.0, "clip the gradient norm"),
    refuse("start_step", None, "step number to start counting from"),
    refuse("free_u", False, "FreeU: rescale the UNet's skip and backbone features"),
    refuse("adapter_assist_name_or_path", None, "an adapter that assists training"),
    ign("adapter_assist_type", "t2i", "kind of that assisting adapter"),
    refuse("noise_multiplier", 1.0, "scale the added noise"),
    refuse("target_noise_multiplier", 1.0, "scale the noise in the loss target"),
    refuse("random_noise_multiplier", 0.0, "randomise the noise scale"),
    refuse("do_signal_correction_noise", False, "signal-correction noise"),
    refuse("do_batch_noise_correction", False, "mix other images of the batch into the noise"),
    ign("batch_noise_correction_scale", 0.1, "strength of that (only with do_batch_noise_correction)"),
    refuse("do_signal_amplification", False, "amplify the image signal in the target"),
    ign("signal_amplification_strength", 0.5, "strength of that (only with do_signal_amplification)"),
    ign("signal_correction_noise_scale", 1.0, "scale of signal-correction noise (only with do_signal_correction_noise)"),
    refuse("random_noise_shift", 0.0, "random shift of the noise mean"),
    refuse("img_multiplier", 1.0, "scale the image before encoding"),
    refuse("noisy_latent_multiplier", 1.0, "scale the noisy latents fed to the denoiser"),
    refuse("latent_multiplier", 1.0, "scale the clean latents"),
    refuse("negative_prompt", None, "train with negative prompts"),
    ign("max_negative_prompts", 1, "how many negative prompts (only with negative_prompt)"),
    impl("reg_weight", 1.0, "loss weight of regularization images"),
    refuse("num_train_timesteps", 1000, "number of training timesteps of the schedule"),
    refuse("adaptive_scaling_factor", False, "adapt the VAE scaling to each image's norm"),
    refuse("prompt_dropout_prob", 0.0, "drop each text encoder's prompt at random"),
    refuse("match_noise_norm", False, "match the noise norm to the prediction's"),
    impl("gradient_accumulation_steps", 1, "legacy gradient accumulation", easel="gradient_accumulation",
         caveat="ai-toolkit counts steps in micro-batches with gradient_accumulation_steps (N steps make N / "
                "accumulation updates); easel counts optimizer steps, as with gradient_accumulation"),
    impl("gradient_accumulation", 1, "micro-batches summed into one optimizer step"),
    refuse("short_and_long_captions", False, "train each image with its short and its long caption"),
    refuse("short_and_long_captions_encoder_split", False, "SDXL: short caption to one encoder, long to the other"),
    warn("single_item_batching", False, "run a batch one image at a time and accumulate",
         "easel runs the whole batch at once (the same update, more memory)"),
    ign("match_adapter_assist", False, "legacy form of match_adapter_chance"),
    ign("match_adapter_chance", 0.0, "how often an assisting adapter is matched (adapters are not trained here)"),
    refuse("loss_target", "noise", "what the loss compares against (noise, source, unaugmented, differential_noise)"),
    impl("inverted_mask_prior", False, _PRESERVE + ": outside the mask the target is the base model's prediction"),
    impl("inverted_mask_prior_multiplier", 0.5, "weight of that prior loss"),
    impl("diff_output_preservation", False, _PRESERVE + ": the class prompt (trigger replaced) must keep the base "
           "model's output"),
    impl("diff_output_preservation_multiplier", 1.0, "weight of the DOP loss"),
    impl("diff_output_preservation_class", "", "the class word replacing the trigger"),
    impl("blank_prompt_preservation", False, _PRESERVE + ": the empty prompt must keep the base model's output"),
    impl("blank_prompt_preservation_multiplier", 1.0, "weight of the blank-prompt loss"),
    refuse("standardize_images", False, "standardise images to the model's mean and std"),
    refuse("standardize_latents", False, "standardise latents to the model's mean and std"),
    refuse("dynamic_noise_offset", False, "a noise offset that follows the image"),
    refuse("do_cfg", False, "train with classifier-free guidance in the prediction"),
    refuse("do_random_cfg", False, "train with a random guidance scale"),
    ign("cfg_scale", 1.0, "guidance scale of that (only with do_cfg)"),
    ign("max_cfg_scale", Same("cfg_scale"), "upper guidance scale (only with do_random_cfg)"),
    ign("cfg_rescale", None, "guidance rescale (only with do_cfg)"),
    refuse("correct_pred_norm", False, "correct the prediction's norm drift in the target"),
    ign("correct_pred_norm_multiplier", 1.0, "strength of that (only with correct_pred_norm)"),
    impl("loss_type", "mse", "loss function"),
    refuse("t0_loss_target", False, "compute the loss on the predicted clean image"),
    ign("t0_velocity_equiv_weight", False, "weighting of that loss (only with t0_loss_target)"),
    refuse("do_fft_loss", False, "add a frequency-domain loss"),
    ign("do_fft_velocity_equiv_weight", False, "weighting of that loss (only with do_fft_loss)"),
    refuse("pred_scaler", 1.0, "scale the prediction before the loss"),
    refuse("prompt_saturation_chance", 0.0, "repeat the prompt at random to fill the encoder"),
    refuse("do_prior_divergence", False, "push the prediction away from the base model's"),
    impl("ema_config", None, "EMA of the adapter weights"),
    refuse("target_norm_std", None, "extra loss pulling the output's std to a value"),
    ign("target_norm_std_value", 1.0, "that value (only with target_norm_std)"),
    impl("timestep_type", "sigmoid", "how training timesteps are drawn"),
    ign("next_sample_timesteps", 8, "steps of the next_sample timestep type"),
    refuse("linear_timesteps", False, "weight the loss linearly by timestep"),
    refuse("linear_timesteps2", False, "another linear timestep weighting"),
    impl("disable_sampling", False, "make no previews"),
    impl("unload_text_encoder", False, "move the text encoder off the device after caching"),
    impl("cache_text_embeddings", False, "encode each caption once"),
    refuse("do_paramiter_swapping", False, "train a random part of the parameters at a time"),
    ign("paramiter_swapping_factor", 0.1, "share trained at a time (only with do_paramiter_swapping)"),
    ign("bypass_guidance_embedding", False, "skip the guidance embedding (no effect on models without one, as here)"),
    refuse("latent_feature_extractor_path", None, "a feature-extractor loss model"),
    ign("latent_feature_loss_weight", 1.0, "weight of that loss (only with a feature extractor)"),
    refuse("diffusion_feature_extractor_path", Same("latent_feature_extractor_path"), "newer name of that model"),
    ign("diffusion_feature_extractor_weight", Same("latent_feature_loss_weight"), "newer name of that weight"),
    refuse("optimal_noise_pairing_samples", 1, "pick the best of N noises for each image"),
    refuse("force_consistent_noise", False, "the same noise for an image every time"),
    refuse("blended_blur_noise", False, "blend blurred noise into the noise"),
    refuse("do_guidance_loss", False, "a contrastive guidance loss"),
    ign("guidance_loss_target", 3.0, "target of that loss (only with do_guidance_loss)"),
    ign("do_guidance_loss_cfg_zero", False, "a variant of that loss (only with do_guidance_loss)"),
    ign("guidance_loss_schedule", "constant", "schedule of that loss (only with do_guidance_loss)"),
    ign("unconditional_prompt", "", "the unconditional prompt of that loss (only with do_guidance_loss)"),
    refuse("do_differential_guidance", False, "train towards an extrapolated target"),
    ign("differential_guidance_scale", 3.0, "how far (only with do_differential_guidance)"),
    ign("switch_boundary_every", 1, "how often two-stage models switch stage (none here)"),
    refuse("do_blank_stabilization", False, "pull empty-prompt predictions to zero"),
    ign("audio_loss_multiplier", 1.0, "weight of the audio loss (audio models)"),
    ign("max_loss_debug", False, "explain losses above max_loss"),
    refuse("max_loss", None, "clip the loss to this"),
    warn("validation_config", None, "validation-loss passes on held-out images",
         "easel runs no validation passes; the LoRA is the same"),
)

MODEL = (
    impl("name_or_path", None, "hub id, folder or checkpoint file of the base model"),
    other("is_v2", False, "selects Stable Diffusion 2.x", "Stable Diffusion 2.x"),
    impl("is_xl", False, "selects SDXL", easel="model.arch"),
    other("is_pixart", False, "selects PixArt-alpha", "PixArt"),
    other("is_pixart_sigma", False, "selects PixArt-sigma", "PixArt-sigma"),
    other("is_auraflow", False, "selects AuraFlow", "AuraFlow"),
    other("is_v3", False, "selects Stable Diffusion 3", "Stable Diffusion 3"),
    impl("is_flux", False, "selects FLUX.1", easel="model.arch"),
    other("is_lumina2", False, "selects Lumina 2", "Lumina 2"),
    refuse("use_flux_cfg", False, "FLUX with real guidance"),
    impl("is_ssd", False, "selects SSD-1B (an SDXL-family UNet)", easel="model.arch"),
    impl("is_vega", False, "selects Segmind Vega (an SDXL-family UNet)", easel="model.arch"),
    impl("is_v_pred", False, "the model predicts v instead of noise", easel="model.prediction_type"),
    impl("dtype", "float16", "precision of the base weights (ai-toolkit's trainer replaces it with train.dtype)",
         easel_default=None),
    impl("vae_path", None, "a separate VAE"),
    refuse("refiner_name_or_path", None, "an SDXL refiner trained and sampled with the base"),
    ign("refiner_start_at", 0.5, "where the refiner takes over (only with a refiner)"),
    impl("lora_path", None, "a LoRA merged into the base model before training"),
    impl("assistant_lora_path", None, "a training adapter merged for training, off for previews"),
    impl("inference_lora_path", None, "a LoRA applied to previews only"),
    refuse("unconditional_lora_path", None, "a LoRA active only in the unconditional guidance pass"),
    ign("latent_space_version", None, "which latent space the VAE uses (models with several)"),
    impl("use_text_encoder_1", True, "SDXL: put the adapter on the first text encoder (when training them)"),
    impl("use_text_encoder_2", True, "SDXL: put the adapter on the second text encoder (when training them)"),
    ign("experimental_xl", False, "an experimental SDXL loading path"),
    warn("text_encoder_bits", 16, "text encoder quantization bits (PixArt)", "use quantize_te and qtype_te"),
    impl("unet_path", None, "load the denoiser from this file or folder instead (ai-toolkit reads it for PixArt only)"),
    warn("unet_sample_size", None, "override the UNet's sample_size", "previews use sample.width / height"),
    ign("vae_device", None, "device of the VAE (placement only)"),
    impl("vae_dtype", Same("dtype"), "precision of the VAE"),
    ign("te_device", None, "device of the text encoders (placement only)"),
    impl("te_dtype", Same("dtype"), "precision of the text encoders"),
    impl("quantize", False, "quantize the denoiser"),
    impl("quantize_te", Same("quantize"), "quantize the text encoders", easel_default=False),
    impl("qtype", "qfloat8", "denoiser quantization type"),
    impl("qtype_te", "qfloat8", "text encoder quantization type"),
    impl("low_vram", False, "load block by block and keep the denoiser off the GPU until used"),
    refuse("attn_masking", False, "mask padding tokens in attention"),
    ign("ignore_if_contains", None, "skip parameters in full fine-tuning (not used by LoRA training)"),
    ign("only_if_contains", None, "train only these parameters in full fine-tuning (not used by LoRA training)"),
    warn("quantize_kwargs", {}, "extra quantization arguments (e.g. modules to exclude)",
         "easel keeps each architecture's sensitive layers unquantized by itself"),
    warn("split_model_over_gpus", False, "split the model over several GPUs",
         "easel keeps a model whole on each GPU, or shards it over all of them with train.distributed: fsdp; use that, "
         "model.low_vram or model.layer_offloading"),
    ign("split_model_other_module_param_count_scale", 0.3, "how that split is balanced (only with split_model_over_gpus)"),
    refuse("te_name_or_path", None, "load the text encoder from elsewhere"),
    impl("arch", None, "architecture name (a :tag after it is ai-toolkit's variant tag)"),
    impl("auto_memory", False, "old name of layer_offloading", easel="layer_offloading"),
    impl("layer_offloading", Same("auto_memory"), "stream denoiser blocks from CPU memory"),
    impl("layer_offloading_transformer_percent", 1.0, "share of denoiser blocks kept in CPU memory",
         easel="layer_offloading_fraction"),
    impl("layer_offloading_text_encoder_percent", 1.0, "share of text encoder layers kept in CPU memory",
         easel="layer_offloading_text_encoder_fraction"),
    impl("extras_name_or_path", Same("name_or_path"), "where the parts name_or_path lacks (text encoder, VAE) come from"),
    refuse("accuracy_recovery_adapter", None, "a LoRA that recovers quantization error, merged in"),
    impl("compile", False, "torch.compile the denoiser", easel="train.compile"),
    ign("block_compile", False, "compile block by block (easel compiles each architecture's units anyway)"),
    impl("compile_mode", "default", "torch.compile mode", easel="train.compile_mode"),
    ign("compile_fullgraph", False, "torch.compile fullgraph"),
    ign("compile_dynamic", True, "torch.compile dynamic shapes"),
    ign("cache_size_limit", None, "torch.compile recompile limit"),
    impl("model_kwargs", {}, "extra arguments of the architecture's loader"),
    refuse("model_paths", {}, "paths of a model's parts, for models that take them"),
    refuse("in_context", False, "in-context (reference image) training"),
)

DATASET = (
    impl("batch_size", None, "this dataset's batch size, overriding train.batch_size"),
    refuse("type", "image", "dataset kind (image, slider, reference)"),
    impl("folder_path", None, "the image folder"),
    refuse("dataset_path", None, "a folder or a JSON list of images and captions"),
    impl("default_caption", None, "caption of images without one", easel_default=""),
    impl("trigger_word", None, "this dataset's trigger word"),
    ign("diff_output_preservation", False, "set by ai-toolkit from train.diff_output_preservation"),
    ign("diff_output_preservation_class", "", "set by ai-toolkit from train.diff_output_preservation_class"),
    impl("random_triggers", [], "add one of these words (or a file's lines) to each caption at random"),
    impl("random_triggers_max", 1, "1: add one of them; N > 1: add 0 to N of them"),
    impl("caption_ext", ".txt", "extension of caption files", easel_default="txt"),
    impl("random_scale", False, "in ai-toolkit's image datasets: crop at a random place (it sets random_crop)"),
    impl("random_crop", False, "crop at a random place"),
    impl("resolution", 512, "training resolution(s)", easel_default=[512]),
    impl("scale", 1.0, "treat images as this much smaller when choosing their bucket"),
    impl("buckets", True, "aspect-ratio buckets (false: every image trained as the resolution's square)"),
    ign("bucket_tolerance", 64, "bucket side step in pixels; ai-toolkit replaces it by the model's divisibility, as easel "
        "uses the architecture's"),
    impl("is_reg", False, "a regularization set (no trigger word added)"),
    refuse("prior_reg", False, "regularize with the base model's prediction on this set"),
    impl("network_weight", 1.0, "adapter weight while training on this dataset"),
    impl("token_dropout_rate", 0.0, "drop each comma-separated caption part at random"),
    impl("shuffle_tokens", False, "shuffle the comma-separated caption parts"),
    impl("caption_dropout_rate", 0.0, "replace the caption by an empty one at random"),
    impl("keep_tokens", 0, "caption parts kept in front when shuffling"),
    impl("flip_x", False, "mirror images horizontally at random"),
    impl("flip_y", False, "mirror images vertically at random"),
    refuse("augments", [], "named image augmentations"),
    impl("control_path", None, "control images (edit and control models; easel: the reference images of edit models, paired with the targets by file name)"),
    ign("control_from_same_folder", False, "take the control image from the image's folder (only with controls)"),
    ign("num_controls_from_same_folder", 1, "how many of those (only with controls)"),
    impl("control_path_1", None, "first control image folder (multi-control models)", easel="control_path"),
    impl("control_path_2", None, "second control image folder (multi-control models)", easel="control_path"),
    impl("control_path_3", None, "third control image folder (multi-control models)", easel="control_path"),
    ign("control_transparent_color", [0, 0, 0], "colour behind transparent control images (only with controls)"),
    refuse("inpaint_path", None, "inpainting images (alpha marks the region)"),
    ign("full_size_control_images", True, "give control images uncropped (only with controls)"),
    impl("alpha_mask", False, "use the image's alpha channel as the loss mask"),
    impl("mask_path", None, "folder of loss masks (white: full loss, black: mask_min_value)"),
    refuse("unconditional_path", None, "matching unconditional images"),
    impl("invert_mask", False, "invert the loss masks"),
    impl("mask_min_value", 0.0, "loss weight where the mask is black"),
    refuse("poi", None, "point of interest crop (removed from ai-toolkit: an error there too)"),
    refuse("use_short_captions", False, "use caption_short from a JSON caption file"),
    impl("num_repeats", 1, "times each image appears per epoch"),
    impl("cache_latents", False, "encode every image once, keep in memory"),
    impl("cache_latents_to_disk", False, "encode every image once, keep on disk"),
    ign("cache_tensors_to_disk", False, "cache decoded video and audio tensors (video)"),
    ign("cache_clip_vision_to_disk", False, "cache CLIP vision embeddings (adapters)"),
    warn("cache_text_embeddings", False, "cache this dataset's caption embeddings",
         "easel caches text embeddings for all datasets with train.cache_text_embeddings; set that instead"),
    ign("load_image_when_caching_latents", False, "also load images when latents are cached"),
    refuse("standardize_images", False, "standardise images"),
    refuse("augmentations", None, "albumentations image augmentations"),
    ign("shuffle_augmentations", False, "shuffle their order (only with augmentations)"),
    impl("caption_type", None, "old spelling of caption_ext", easel="caption_ext"),
    ign("guidance_type", "targeted", "kind of guided training (only with a guidance block)"),
    refuse("clip_image_path", None, "images for an IP adapter's CLIP vision input"),
    ign("clip_image_from_same_folder", False, "take them from the image's folder (only with clip_image_path)"),
    ign("clip_image_augmentations", None, "augment them (only with clip_image_path)"),
    ign("clip_image_shuffle_augmentations", False, "shuffle those (only with clip_image_path)"),
    refuse("replacements", [], "caption word replacements"),
    impl("loss_multiplier", 1.0, "loss weight of this dataset"),
    ign("num_workers", 2, "data loader worker processes (speed only)"),
    ign("prefetch_factor", 2, "batches loaded ahead per worker (speed only)"),
    ign("cache_latents_num_workers", 6, "threads preparing images while caching (speed only)"),
    refuse("extra_values", [], "extra conditioning numbers per image"),
    impl("square_crop", False, "crop every image to the resolution's square"),
    ign("replay_transforms", True, "apply an image's transforms to its control images too (only with controls)"),
    other("num_frames", 1, "frames per training item (video)", _VIDEO),
    ign("shrink_video_to_frames", True, "sample video frames evenly (video)"),
    ign("fps", 24, "frame rate to read videos at (video)"),
    ign("auto_frame_count", False, "read as many frames as the video has (video)"),
    ign("trim_auto_frame_count_tail", True, "trim the video tail instead of shrinking (video)"),
    ign("debug", False, "print frame selection details (video)"),
    refuse("controls", [], "control images made automatically (depth, line, pose, ...)"),
    ign("fast_image_size", False, "read image sizes quickly (speed only)"),
    ign("do_i2v", False, "image-to-video on models that do both (no effect on image models)"),
    ign("do_audio", False, "load audio from videos (audio-video models)"),
    ign("audio_preserve_pitch", False, "keep the pitch when stretching audio (audio-video models)"),
    ign("audio_normalize", False, "normalise audio volume (audio-video models)"),
)

ARCH_FLAGS = ("is_v2", "is_xl", "is_pixart", "is_pixart_sigma", "is_auraflow", "is_v3", "is_flux", "is_lumina2", "is_ssd",
              "is_vega")
"""The model flags that pick ai-toolkit's architecture; with none of them true (and no ``arch``) it trains SD 1.x."""

BLOCKS: dict[str, tuple[Key, ...]] = {
    "process[]": PROCESS, "network": NETWORK, "network.network_kwargs": NETWORK_KWARGS, "save": SAVE,
    "datasets[]": DATASET, "train": TRAIN, "train.ema_config": EMA, "model": MODEL, "sample": SAMPLE,
    "sample.samples[]": SAMPLE_ITEM, "logging": LOGGING,
}
"""Keys by easel block name (``Block.block_name``)."""
