"""Config of the LoRA trainer process (``type: lora_trainer``, aliases sd_trainer / diffusion_trainer)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from toolkit.config.aitoolkit import apply_moves
from toolkit.config.base import Block
from toolkit.config.blocks import DatasetConfig, LoggingConfig, ModelConfig, NetworkConfig, SaveConfig, TrainConfig
from toolkit.config.sample import SampleConfig, reference_problems, sampler_problems


class LoraTrainerConfig(Block):
    """Train a LoRA (or LyCORIS) adapter on a diffusion model."""

    block_name: ClassVar[str] = "process[]"
    aitoolkit: ClassVar[bool] = True

    type: Literal["lora_trainer"]
    """Process type; ``sd_trainer`` and ``diffusion_trainer`` are accepted too."""
    training_folder: str = "output"
    """Runs land in ``<training_folder>/<name>/``."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps; with ``accelerate launch`` each process takes its own GPU."""
    trigger_word: str | None = None
    """Word that calls up the trained concept; replaces ``[trigger]`` and is added to captions without it."""
    network: NetworkConfig = NetworkConfig()
    """The adapter to train."""
    save: SaveConfig = SaveConfig()
    """When and how the adapter is saved."""
    datasets: list[DatasetConfig] = Field(min_length=1)
    """Image folders to train on."""
    train: TrainConfig = TrainConfig()
    """Optimisation settings."""
    model: ModelConfig
    """The base model."""
    sample: SampleConfig | None = None
    """Preview images during training; leave out to make none."""
    logging: LoggingConfig = LoggingConfig()
    """Progress output and trackers."""

    @model_validator(mode="before")
    @classmethod
    def _ai_toolkit_places(cls, data: Any) -> Any:
        """ai-toolkit keys that easel reads in another block (``model.compile`` is ``train.compile``)."""
        return apply_moves(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _peft_files(self) -> "LoraTrainerConfig":
        """``network_kwargs.peft_format`` writes diffusers/PEFT keys unless ``save.format`` says otherwise."""
        if self.network.network_kwargs is not None and self.network.network_kwargs.peft_format and self.save.format is None:
            self.save.format = "diffusers"
        return self

    def _preview_prompt_problems(self) -> list[tuple[tuple, str]]:
        """Inline flags are checked now (not after the model loaded); previews cannot load other LoRAs."""
        from toolkit.errors import EaselError
        from toolkit.sampling.prompts import parse_prompt

        if self.sample is None:
            return []
        problems: list[tuple[tuple, str]] = []
        items = [(("sample", "prompts", i), p) for i, p in enumerate(self.sample.prompts)]
        items += [(("sample", "samples", i, "prompt"), s.prompt) for i, s in enumerate(self.sample.samples)]
        for where, text in items:
            try:
                spec = parse_prompt(text)
            except EaselError as err:
                problems.append((where, str(err)))
                continue
            if spec.loras:
                problems.append((where, "preview prompts cannot load other LoRAs (<lora:...> tags); the trained one is "
                                        "always applied at sample.network_multiplier. Remove the tag."))
        return problems

    def _sharding_problems(self) -> list[tuple[tuple, str]]:
        """``train.distributed: fsdp`` refuses the model options it cannot shard."""
        from toolkit.train.sharding import INCOMPATIBLE

        if self.train.distributed != "fsdp":
            return []
        return [(("model", option), f"cannot be used with train.distributed: fsdp: {reason}. Turn one of them off.")
                for option, reason in INCOMPATIBLE.items() if getattr(self.model, option)]

    def _reference_problems(self, registry: Any) -> list[tuple[tuple, str]]:
        """Edit pairs (``control_path``) and preview references must fit the architecture; a preview's ``ctrl_img``
        is a reference image where the architecture takes them, else the image of ``sample.controlnets[ctrl_idx]``."""
        problems: list[tuple[tuple, str]] = []
        for i, dataset in enumerate(self.datasets):
            if dataset.control_path:
                problems += reference_problems(registry, self.model.arch, len(dataset.control_path), ("datasets", i, "control_path"))
        if self.sample is None:
            return problems
        references = registry.arch(self.model.arch).spec.references is not None
        for i, item in enumerate(self.sample.samples):
            keys = [key for key, _ in item.reference_keys() if references or key != "ctrl_img"]
            if keys:
                problems += reference_problems(registry, self.model.arch, len(keys), ("sample", "samples", i, keys[0]))
        problems += [(("sample", *where), message) for where, message in self.sample.control_problems(references)]
        return problems

    def _preservation_problems(self) -> list[tuple[tuple, str]]:
        """Prior preservation needs what ai-toolkit needs: a trigger word (DOP), a frozen text encoder, a mask."""
        train, problems = self.train, []
        if train.diff_output_preservation and not (self.trigger_word or any(d.trigger_word for d in self.datasets)):
            problems.append((("train", "diff_output_preservation"), "needs a trigger_word: it is what the class word "
                             "replaces; set trigger_word, or turn diff_output_preservation off"))
        if train.diff_output_preservation and train.blank_prompt_preservation:
            problems.append((("train", "blank_prompt_preservation"), "set either diff_output_preservation or "
                             "blank_prompt_preservation, not both (each is the preservation target)"))
        for key in ("diff_output_preservation", "blank_prompt_preservation"):
            if getattr(train, key) and train.train_text_encoder:
                problems.append((("train", key), "cannot be used with train_text_encoder (the base model's prediction "
                                 "needs the text encoder unchanged); set one of them false"))
            if getattr(train, key) and train.unload_text_encoder:
                problems.append((("train", key), "encodes its prompts each step, so the text encoder must stay: set "
                                 "train.unload_text_encoder false"))
        if train.inverted_mask_prior and not any(d.mask_path or d.alpha_mask for d in self.datasets):
            problems.append((("train", "inverted_mask_prior"), "needs a dataset with mask_path or alpha_mask (it "
                             "acts outside the masks)"))
        if train.merge_network_on_save and self.model.quantize:
            problems.append((("train", "merge_network_on_save"), "cannot merge the adapter into quantized weights; "
                             "set model.quantize false or save the LoRA"))
        return problems

    def check(self, registry: Any) -> list[tuple[tuple, str]]:
        """Cross-block checks that need the registry: sampler and noise schedule fit the architecture."""
        problems: list[tuple[tuple, str]] = []
        arch = registry.arch(self.model.arch).spec
        if self.sample is not None:
            from toolkit.control.inputs import controlnet_problems

            problems += sampler_problems(registry, self.model.arch, self.sample.sampler, ("sample", "sampler"))
            problems += [(("sample", "controlnets", *where), message) for where, message
                         in controlnet_problems(self.sample.controlnets, arch, registry.archs.values(), self.model)]
        scheduler = self.train.noise_scheduler
        if scheduler is not None and scheduler not in arch.noise_schedulers:
            problems.append((("train", "noise_scheduler"), f"noise_scheduler '{scheduler}' does not fit architecture '{arch.name}'. "
                             f"Valid: {', '.join(arch.noise_schedulers)}."))
        if self.train.unload_text_encoder and not self.train.cache_text_embeddings:
            problems.append((("train", "unload_text_encoder"), "needs train.cache_text_embeddings: true (captions must be encoded before the encoder leaves)"))
        if self.train.gradient_checkpointing_interval > 1 and not self.train.gradient_checkpointing:
            problems.append((("train", "gradient_checkpointing_interval"), "needs train.gradient_checkpointing: true; "
                             "set it, or remove gradient_checkpointing_interval"))
        if self.train.compile_mode != "default" and not self.train.compile:
            problems.append((("train", "compile_mode"), "needs train.compile: true; set it, or remove compile_mode"))
        if self.train.working_copies and self.train.dtype == "fp32":
            problems.append((("train", "working_copies"), "needs train.dtype bf16 or fp16 (with fp32 the adapter already "
                             "computes in float32); set train.dtype: bf16 or remove working_copies"))
        if self.train.flat_optimizer:
            problems += _flat_optimizer_problems(self.train, self.network.type)
        if self.train.train_text_encoder and self.train.cache_text_embeddings:
            problems.append((("train", "cache_text_embeddings"), "cannot cache text embeddings while training the text encoder; set one of them false"))
        if self.train.cache_text_embeddings:
            for i, dataset in enumerate(self.datasets):
                for key, on in (("shuffle_tokens", dataset.shuffle_tokens), ("token_dropout_rate", dataset.token_dropout_rate > 0),
                                ("random_triggers", bool(dataset.random_triggers))):
                    if on:
                        problems.append((("datasets", i, key), f"{key} makes a new caption every step, which "
                                         "train.cache_text_embeddings cannot cache; turn one of them off "
                                         "(caption_dropout_rate works with the cache)"))
        problems += self._sharding_problems()
        problems += self._preview_prompt_problems() + self._preservation_problems()
        problems += self._reference_problems(registry)
        if not (self.train.train_unet or self.train.train_text_encoder):
            problems.append((("train", "train_unet"), "nothing to train: set train_unet or train_text_encoder to true"))
        return problems


def _flat_optimizer_problems(train: TrainConfig, network_type: str) -> list[tuple[tuple, str]]:
    """``train.flat_optimizer: true`` needs the working copies (bf16) and an optimizer whose update is elementwise."""
    from toolkit.train.optimizers import FLAT_OPTIMIZERS

    where = ("train", "flat_optimizer")
    if train.optimizer not in FLAT_OPTIMIZERS:
        return [(where, f"does not suit optimizer '{train.optimizer}' (its update is not elementwise); it suits "
                        f"{', '.join(FLAT_OPTIMIZERS)}. Remove flat_optimizer or change the optimizer")]
    if train.dtype != "bf16" or train.working_copies is False:
        return [(where, "steps the working copies' flat buffers: it needs train.dtype bf16 with working_copies on "
                        "(fp16's loss scaler unscales per tensor); remove flat_optimizer or set train.dtype: bf16")]
    if network_type not in ("lora", "locon") and not train.working_copies:
        return [(where, f"steps the working copies' flat buffers, which a {network_type} network has only with "
                        "train.working_copies: true; set it, or remove flat_optimizer")]
    return []
