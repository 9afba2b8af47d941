"""Everything a training run needs, built in order: accelerator, model, data, network, optimizer, schedule.

``prepare_run`` is called by the trainer process; the loop itself is ``toolkit.train.loop.Trainer``.
Under ``accelerate launch`` / ``torchrun`` each process trains on its own share of every batch; only the
small ``DiffusionStep`` (whose only parameters are the adapter's) is wrapped in DistributedDataParallel,
the frozen base model is never wrapped. Only the main process writes files and prints the progress bar.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.train.checkpoint import SaveFiles, lora_metadata, save_lora, tag_frequency
from toolkit.train.logs import TrainLog

if TYPE_CHECKING:
    from accelerate import Accelerator

    from toolkit.config.train import LoraTrainerConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network
    from toolkit.output import RunFolder
    from toolkit.train.ema import EMA
    from toolkit.train.process import LoraTrainerProcess
    from toolkit.train.sampling import Preview
    from toolkit.train.working import WorkingCopies


@dataclass
class TrainRun:
    """A prepared run: the parts the loop uses, and the run's file writing."""

    config: "LoraTrainerConfig"
    name: str
    source: Path
    folder: Path
    accelerator: "Accelerator"
    device: torch.device
    adapter: "ModelAdapter"
    data: Any
    new_position: Callable[..., Any]
    network: "Network"
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    ema: "EMA | None"
    generator: torch.Generator
    total_steps: int
    accumulation: int
    max_grad_norm: float
    previews: "list[Preview]"
    sample_every: int
    offloaded: list[str]
    saves: SaveFiles
    metadata: dict[str, Any]
    log: TrainLog
    run_folder: "RunFolder | None" = None
    summary: list[str] = field(default_factory=list)
    working: "WorkingCopies | None" = None

    @cached_property
    def params(self) -> list[torch.nn.Parameter]:
        """The trained parameters (fixed once the network is built; listing them walks every adapter module)."""
        return list(self.network.parameters())

    def log_start(self, step: int) -> None:
        """Start the progress bar and say what is trained."""
        if self.accelerator.is_main_process:
            for line in self.summary:
                log.info(line)
        self.log = TrainLog(self.folder, enabled=self.accelerator.is_main_process, total_steps=self.total_steps,
                            start_step=step, config=self.config.logging, run_name=self.name)

    def sample(self, step: int) -> None:
        """Make and write the previews of ``step``."""
        from toolkit.train.sampling import make_previews, save_previews

        images = make_previews(self.adapter, self.network, self.ema, self.previews, self.offloaded)
        sample = self.config.sample
        labels = [preview.request.prompt for preview in self.previews]
        paths = save_previews(images, self.folder / "samples", step, sample.format if sample is not None else "png", labels)
        self.log.write(f"step {step}: {len(paths)} previews in {self.folder / 'samples'}")

    def save_lora(self, step: int, *, final: bool) -> Path:
        """Write the LoRA file of ``step`` (EMA weights when EMA is on)."""
        from contextlib import nullcontext

        path = self.saves.final_lora if final else self.saves.step_lora(step)
        metadata = lora_metadata(step=step, **self.metadata)
        with self.ema.swapped() if self.ema is not None else nullcontext():
            save_lora(self.network, path, arch=self.adapter.arch, format=self.config.save.format, metadata=metadata,
                      dtype=self.config.save.dtype)
        self.log.write(f"step {step}: saved {path}")
        return path

    def finish(self, step: int) -> None:
        """Close the log and draw the loss curve."""
        self.log.close()
        curve = self.log.plot()
        if self.accelerator.is_main_process:
            log.info(f"Done: {self.saves.final_lora} after {step} steps" + (f"; loss curve in {curve}" if curve else "") + ".")

    def close(self, error: BaseException | None = None) -> None:
        """Close the log and the run folder; the error that ended the run (if any) goes into log.txt too."""
        self.log.close()
        if self.run_folder is not None:
            if isinstance(error, Exception):
                self.run_folder.record(f"error: {error}")
            self.run_folder.close()


def make_accelerator(process: "LoraTrainerProcess") -> "Accelerator":
    """The Accelerator: mixed precision from train.dtype, accumulation, one process per device.

    accelerate keeps its settings in process-wide singletons; they are cleared first (keeping the
    distributed setup) so that several training processes or configs can run one after another.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()

    from toolkit.devices import resolve_device

    train = process.config.train
    wanted = resolve_device(process.config.device)
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[train.dtype]
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=train.gradient_accumulation,
                       cpu=wanted.type == "cpu", step_scheduler_with_optimizer=False)


def run_device(process: "LoraTrainerProcess", accelerator: "Accelerator") -> torch.device:
    """The process's own device under a launcher, else the configured one."""
    from toolkit.devices import resolve_device

    return accelerator.device if accelerator.num_processes > 1 else resolve_device(process.config.device)


def enable_checkpointing(module: torch.nn.Module, name: str, interval: int = 1) -> "IntervalCheckpointing | None":
    """Gradient checkpointing through the module's own switch (diffusers or transformers); for a diffusers model
    only one block in ``interval`` (the function doing that is returned)."""
    switch = getattr(module, "enable_gradient_checkpointing", None)
    if callable(switch):
        if interval == 1:
            switch()
            return None
        if "gradient_checkpointing_func" not in inspect.signature(switch).parameters:
            log.warning(f"warning: {name} checkpoints every block: its enable_gradient_checkpointing takes no "
                        f"checkpointing function, so train.gradient_checkpointing_interval {interval} does not apply.")
            switch()
            return None
        function = IntervalCheckpointing(interval)
        switch(gradient_checkpointing_func=function)
        return function
    elif callable(getattr(module, "activation_checkpointing_enable", None)):
        module.activation_checkpointing_enable({"use_reentrant": False})
    elif callable(getattr(module, "gradient_checkpointing_enable", None)):
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        log.warning(f"warning: {name} has no gradient checkpointing switch; training without it.")
    return None


class IntervalCheckpointing:
    """diffusers' checkpointing function for one block in ``interval``; the others run as usual.

    diffusers calls it with each block it would checkpoint; blocks are numbered in the order first seen, which
    is the model's forward order, so the same blocks are checkpointed in every step.
    """

    def __init__(self, interval: int):
        self.interval = interval
        self.order: dict[torch.nn.Module, int] = {}
        self.always: set[torch.nn.Module] = set()
        """Blocks checkpointed whatever their number: offloaded ones, whose weights must not wait for backward."""

    def always_checkpoint(self, blocks: "list[torch.nn.Module]") -> None:
        """Checkpoint these blocks and everything in them whatever their number."""
        for block in blocks:
            self.always.update(block.modules())

    def checkpointed(self, block: Any) -> bool:
        """Whether ``block`` is checkpointed (anything not a module always is)."""
        if not isinstance(block, torch.nn.Module):
            return True
        index = self.order.setdefault(block, len(self.order))
        return index % self.interval == 0 or block in self.always

    def __call__(self, block: Any, *args: Any) -> Any:
        from torch.utils.checkpoint import checkpoint

        if not self.checkpointed(block):
            return block(*args)
        return checkpoint(block.__call__, *args, use_reentrant=False)


def network_targets(process: "LoraTrainerProcess", adapter: "ModelAdapter") -> dict[str, list[str]]:
    """Target names per trained component: ``network.target_modules`` or the architecture's defaults."""
    train, network = process.config.train, process.config.network
    trained = ([adapter.denoiser_name] if train.train_unet else []) + (adapter.trained_text_encoders() if train.train_text_encoder else [])
    if network.target_modules:
        return {component: list(network.target_modules) for component in trained}
    defaults = adapter.lora_targets(train.train_text_encoder)
    return {component: names for component, names in defaults.items() if component in trained}


def learning_rates(process: "LoraTrainerProcess", adapter: "ModelAdapter") -> dict[str, float]:
    train = process.config.train
    rates = {adapter.denoiser_name: train.unet_lr or train.lr}
    rates.update({name: train.text_encoder_lr or train.lr for name in adapter.text_encoders})
    return rates


def build_network(process: "LoraTrainerProcess", adapter: "ModelAdapter") -> "Network":
    """Wrap the trained components, in float32, starting from ``pretrained_lora_path`` if set."""
    from toolkit.network.network import Network

    cfg = process.config
    layout = adapter.network_layout()
    if cfg.network.target_modules:  # the layers asked for by name are taken as given
        layout = replace(layout, transformer_blocks=())
    network = Network.build(adapter.components(), network_targets(process, adapter), cfg.network, layout=layout)
    network.float()
    if cfg.network.pretrained_lora_path:
        from toolkit.lora_io import load_lora

        start = load_lora(cfg.network.pretrained_lora_path, arch=adapter.arch, adapter=adapter)
        try:
            network.load_state_dict(start.state_dict())
        except EaselError as err:
            raise EaselError(f"network.pretrained_lora_path {cfg.network.pretrained_lora_path}: {err}") from None
        log.info(f"Starting from {cfg.network.pretrained_lora_path} ({start.format} format).")
    if cfg.network.type == "locon" and cfg.network.conv is None:
        log.warning("warning: network.type locon without network.conv trains no 3x3 convolutions (the same as lora); set conv.")
    return network


def make_objective(process: "LoraTrainerProcess", adapter: "ModelAdapter") -> Any:
    """The noise schedule with the config's timestep sampling and loss weighting."""
    from toolkit.train.noise import Objective

    train = process.config.train
    schedule = adapter.noise_schedule()
    if schedule.kind == "flowmatch" and train.min_snr_gamma:
        log.warning("warning: train.min_snr_gamma weights DDPM (SD) losses; this model trains with flow matching, so it is not used.")
    if schedule.kind == "ddpm" and train.timestep_type not in ("uniform", "weighted", "sigmoid"):
        log.warning(f"warning: train.timestep_type {train.timestep_type} shapes flow-matching timesteps; this DDPM model draws them uniformly.")
    return Objective(schedule, timestep_type=train.timestep_type, content_or_style=train.content_or_style,
                     noise_offset=train.noise_offset, min_snr_gamma=train.min_snr_gamma if schedule.kind == "ddpm" else None)


def _freeze(adapter: "ModelAdapter") -> None:
    for module in [*adapter.components().values(), adapter.vae]:
        module.requires_grad_(False)


def prepare_run(process: "LoraTrainerProcess") -> TrainRun:
    """Build every part of the run, in order."""
    from toolkit.output import RunFolder

    cfg, name = process.config, process.job.name
    accelerator = make_accelerator(process)
    if not accelerator.is_main_process:
        log.setLevel(logging.ERROR)  # the main process reports; the others only speak up about errors
    device = run_device(process, accelerator)
    run_folder = RunFolder(Path(cfg.training_folder), name) if accelerator.is_main_process else None
    if run_folder is not None:
        run_folder.open(process.job.loaded.resolved)
    try:
        return _build(process, accelerator, device, run_folder)
    except BaseException as error:
        if run_folder is not None:
            if isinstance(error, Exception):
                run_folder.record(f"error: {error}")
            run_folder.close()
        raise


def _build(process: "LoraTrainerProcess", accelerator: "Accelerator", device: torch.device, run_folder: "RunFolder | None") -> TrainRun:
    from accelerate.utils import set_seed

    from toolkit.devices import resolve_dtype

    cfg, train = process.config, process.config.train
    rank, world = accelerator.process_index, accelerator.num_processes
    if train.dtype == "fp16" and accelerator.scaler is None:
        log.warning(f"warning: train.dtype fp16 on {device.type} runs without autocast and loss scaling "
                    "(accelerate has them for GPUs only); bf16 or fp32 train better here.")
    if train.compile:
        from toolkit.models.memory import check_compile

        check_compile(device)
    set_seed(train.seed)
    adapter = process.load_model(device, resolve_dtype(cfg.model.dtype or train.dtype))
    _freeze(adapter)
    data_class, position_class = process.data_api()
    data = process.make_data(data_class, bucket_divisibility=adapter.bucket_divisibility, rank=rank, world_size=world)
    for line in data.report() if accelerator.is_main_process else []:
        log.info(line)
    # With several ranks the disk caches are filled together, each rank encoding its share.
    barrier = accelerator.wait_for_everyone if world > 1 else None
    data.prepare(adapter, cache_text=train.cache_text_embeddings, barrier=barrier)
    offloaded = unused_components(process, adapter)
    if offloaded:
        adapter.move(offloaded, "cpu")
        log.info(f"{', '.join(offloaded)} moved to the CPU for training (their outputs are cached).")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # Seeded again: loading (a tiny model built or read from its cache) and filling the caches use the global
    # generator by different amounts, and the adapter's initial weights must not depend on that.
    set_seed(train.seed)
    network = _network_with_checkpointing(process, adapter)
    set_seed(train.seed + rank)
    return _assemble(process, accelerator, device, adapter, data, position_class, network, offloaded, run_folder)


def unused_components(process: "LoraTrainerProcess", adapter: "ModelAdapter") -> list[str]:
    """Components training never calls once the caches are filled: they leave the device (previews bring them back).

    The text encoders with ``unload_text_encoder`` (the config check demands cached embeddings for it), the
    VAE when every dataset caches its latents.
    """
    cfg = process.config
    names = list(adapter.text_encoders) if cfg.train.unload_text_encoder else []
    if all(dataset.cache_latents or dataset.cache_latents_to_disk for dataset in cfg.datasets):
        names.append("vae")
    return names


def _network_with_checkpointing(process: "LoraTrainerProcess", adapter: "ModelAdapter") -> "Network":
    """Checkpointing switches, the network, then the denoiser's placement (low_vram, offloading) and compile."""
    from toolkit.models.memory import compile_blocks, offloaded, place_denoiser

    cfg, train = process.config, process.config.train
    interval = None
    if train.gradient_checkpointing:
        if train.train_unet:
            interval = enable_checkpointing(adapter.denoiser, adapter.denoiser_name, train.gradient_checkpointing_interval)
        for encoder_name, encoder in adapter.text_encoders.items() if train.train_text_encoder else []:
            enable_checkpointing(encoder, encoder_name)
    elif cfg.model.layer_offloading:
        log.warning("warning: model.layer_offloading without train.gradient_checkpointing saves little memory in "
                    "training: the backward pass keeps every block's weights on the device. Turn checkpointing on.")
    network = build_network(process, adapter)
    place_denoiser(adapter)
    if interval is not None:
        interval.always_checkpoint(offloaded(adapter.denoiser))
        log.info(f"gradient checkpointing: one {adapter.denoiser_name} block in {interval.interval}"
                 + (" (and every offloaded one)" if interval.always else ""))
    network.to(adapter.device)
    if train.compile:
        streamed = offloaded(adapter.denoiser)
        count = compile_blocks(adapter.compile_units(), skip=streamed)
        log.info(f"torch.compile: {count} {adapter.denoiser_name} blocks (the first steps are slow while they compile)"
                 + (f"; {len(streamed)} offloaded blocks run uncompiled" if streamed else ""))
    return network


def _assemble(process: "LoraTrainerProcess", accelerator: "Accelerator", device: torch.device, adapter: "ModelAdapter",
              data: Any, position_class: Any, network: "Network", offloaded: list[str], run_folder: "RunFolder | None") -> TrainRun:
    """Optimizer, schedule, the prepared step module, EMA, previews, and the run record."""
    from toolkit.train.ema import EMA
    from toolkit.train.loop import DiffusionStep, steps_for
    from toolkit.train.lr import build_scheduler
    from toolkit.train.optimizers import build_optimizer
    from toolkit.train.sampling import preview_requests

    cfg, train, name = process.config, process.config.train, process.job.name
    rank = accelerator.process_index
    generator = torch.Generator().manual_seed((train.seed + 1_000_003 * (rank + 1)) % 2 ** 63)
    step_module = DiffusionStep(adapter, network, make_objective(process, adapter), loss_type=train.loss_type,
                                huber_c=train.huber_c, train_text_encoder=train.train_text_encoder, generator=generator)
    optimizer = build_optimizer(train.optimizer, network.param_groups(learning_rates(process, adapter), train.lr),
                                train.lr, dict(train.optimizer_params))
    total = train.steps if train.steps is not None else steps_for(train.epochs or 1, data.steps_per_epoch(), train.gradient_accumulation)
    scheduler = build_scheduler(train.lr_scheduler, optimizer, warmup_steps=train.lr_warmup_steps, total_steps=total,
                                params=dict(train.lr_scheduler_params))
    model, optimizer = accelerator.prepare(step_module, optimizer, device_placement=[False, False])
    working = working_copies(process, accelerator, network)
    ema = EMA(list(network.parameters()), train.ema_config.ema_decay) if train.ema_config.use_ema else None
    sample = cfg.sample
    previews = preview_requests(sample, process.arch) if sample is not None and not train.disable_sampling else []
    folder = Path(cfg.training_folder) / name
    captions = data.dataset_captions()
    metadata = dict(name=name, base_model=cfg.model.name_or_path, network=cfg.network, train=train,
                    trigger_word=cfg.trigger_word, resolution=sorted({r for d in cfg.datasets for r in d.resolution}),
                    images=sum(len(c) for c in captions.values()), tag_frequency=tag_frequency(captions),
                    prediction_type=adapter.noise_schedule().prediction_type, config=process.job.loaded.resolved,
                    meta=process.job.loaded.meta.model_dump(exclude_defaults=True))
    summary = [f"Training {name}: {total} steps on {accelerator.num_processes} x {device} "
               f"({train.dtype} compute, base weights {adapter.dtype}), batch {train.batch_size} x accumulation "
               f"{train.gradient_accumulation}, {train.optimizer} lr {train.lr:g} ({train.lr_scheduler})",
               *(f"  {cfg.network.type} on {line}" for line in network.summary())]
    if working is not None:
        summary.append(f"  adapter weights float32, computed through {train.dtype} working copies (train.working_copies)")
    return TrainRun(
        config=cfg, name=name, source=process.job.loaded.source, folder=folder, accelerator=accelerator, device=device,
        adapter=adapter, data=data, new_position=position_class, network=network, model=model, optimizer=optimizer,
        scheduler=scheduler, ema=ema, generator=generator, total_steps=total, accumulation=train.gradient_accumulation,
        max_grad_norm=train.max_grad_norm, previews=previews, sample_every=sample.sample_every if sample else 0,
        offloaded=offloaded, saves=SaveFiles(folder, name, cfg.save.max_step_saves_to_keep), metadata=metadata,
        log=TrainLog(folder, enabled=False, total_steps=total, start_step=0, config=cfg.logging, run_name=name),
        run_folder=run_folder, summary=summary, working=working)


def working_copies(process: "LoraTrainerProcess", accelerator: "Accelerator", network: "Network") -> "WorkingCopies | None":
    """bf16/fp16 working copies of the adapter weights (``train.working_copies``; see ``toolkit.train.working``).

    Only under autocast (accelerate's native mixed precision): without it there is nothing to save. Not with
    several processes: DDP reduces the gradients in the parameters' own float32 buckets. By default only for
    lora/locon, whose results are bit for bit those of autocast; DoRA, LoHa and LoKr compute their weight
    from several tensors, which in bf16 rounds differently, so they take it only when asked.
    """
    from toolkit.devices import resolve_dtype
    from toolkit.train.working import WorkingCopies

    train = process.config.train
    wanted = train.working_copies
    if wanted is False or not accelerator.native_amp:
        return None
    if accelerator.num_processes > 1:
        if wanted:
            log.info("train.working_copies is off with several processes (DDP reduces float32 gradients).")
        return None
    if wanted is None and process.config.network.type not in ("lora", "locon"):
        return None
    params = [p for p in network.parameters() if p.requires_grad]
    if not WorkingCopies.supported(params):
        return None
    return WorkingCopies(params, resolve_dtype(train.dtype))
