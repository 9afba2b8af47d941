"""The LoRA training recipe, read top to bottom: ``LoraTrainingRecipe``.

One class with torchtune's recipe lifecycle. ``setup()`` builds every part of a run in order: accelerator,
run folder, model, data (and its caches), network, optimizer and lr schedule, EMA, previews; then it resumes
from the run's newest training state, if there is one. ``train()`` is the loop; ``save_checkpoint()`` writes
the LoRA file and the training state beside it; ``cleanup()`` closes what setup opened. ``run()`` calls them
in that order. The collaborators come in through the constructor: a ``ModelLoader`` and a ``DataFactory``
(``jobs/train.py`` passes the real ones, ``tests/train/fakes.py`` fakes).

Each optimizer step draws ``gradient_accumulation`` batches; each batch goes through ``DiffusionStep``
(encode, noise, denoise, score) and its gradient is added. Then the gradient is clipped, the optimizer and
the lr schedule step, the EMA follows, and the step is logged. Saves and previews happen between steps; a
stop signal finishes the current step, saves and exits. A save refused (not finite as stored) or cut short
(a full disk) stops the run with the last good save named (``SaveFiles.guard``).

Under ``accelerate launch`` / ``torchrun`` each process trains on its own share of every batch; only the
small ``DiffusionStep`` (whose only parameters are the adapter's) is wrapped in DistributedDataParallel,
the frozen base model is never wrapped. With ``train.distributed: fsdp`` the frozen denoiser is also sharded
across the processes (``toolkit.train.sharding``), and previews are then made by all of them together. Only the
main process writes files and prints the progress bar.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol

import torch

from toolkit.train.requests import Requests
from toolkit.errors import EaselError, Interrupted
from toolkit.log import log
from toolkit.models.encoder_memo import EncoderMemo
from toolkit.output import run_folder_path
from toolkit.train.checkpoint import SaveFiles, lora_metadata, save_lora, save_merged, tag_frequency
from toolkit.train.logs import TrainLog
from toolkit.train.signals import StopSignals
from toolkit.train.state import (capture_rng, latest_state, load_state, restore_rng, save_state, state_mismatch,
                                 state_path)

if TYPE_CHECKING:
    from accelerate import Accelerator

    from toolkit.config.blocks import ModelConfig
    from toolkit.config.job import LoadedJob
    from toolkit.config.train import LoraTrainerConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network
    from toolkit.output import RunFolder
    from toolkit.registry import ArchRef, ReferenceImages
    from toolkit.train.ema import EMA
    from toolkit.train.sampling import Preview
    from toolkit.train.working import WorkingCopies


class ModelLoader(Protocol):
    """Loads the base model into its architecture's adapter (``toolkit.models.loading.load_model``)."""

    def __call__(self, config: "ModelConfig", arch: "ArchRef", *, device: torch.device, dtype: torch.dtype) -> "ModelAdapter":
        ...


class TrainingData(Protocol):
    """What the recipe asks of its data (``toolkit.data.loader.TrainData``)."""

    def report(self) -> list[str]:
        """Lines describing the datasets."""

    def steps_per_epoch(self) -> int:
        """Global batches per epoch."""

    def dataset_captions(self) -> dict[str, list[str]]:
        """Captions per dataset folder name (for the LoRA header's tag frequency)."""

    def prepare(self, adapter: "ModelAdapter", *, cache_text: bool, barrier: Callable[[], None] | None) -> None:
        """Fill the latent and text caches."""

    def position(self, saved: Mapping[str, int] | None = None) -> Any:
        """The loader position to start from: the first batch, or one a training state saved."""

    def batches(self, start: Any) -> Iterator[tuple[Any, Any]]:
        """Batches from ``start`` on, endlessly, each with the position after it."""


class DataFactory(Protocol):
    """Makes the run's data for one process's share (``jobs/train.py``: ``TrainData`` over the config's datasets)."""

    def __call__(self, *, bucket_divisibility: int, rank: int, world_size: int,
                 references: "ReferenceImages | None") -> TrainingData:
        ...


class LoraTrainingRecipe:
    """One ``type: lora_trainer`` run: ``setup()``, ``train()``, ``save_checkpoint()``, ``cleanup()``."""

    accelerator: "Accelerator"
    device: torch.device
    adapter: "ModelAdapter"
    data: TrainingData
    offloaded: list[str]
    """Components moved off the device for training (their outputs are cached); previews bring them back."""
    memo: "EncoderMemo | None"  # the frozen text encoders' outputs for the previews (toolkit/models/encoder_memo.py)
    network: "Network"
    params: list[torch.nn.Parameter]
    generator: torch.Generator
    """The noise and timestep generator (its own, so previews never disturb it)."""
    model: torch.nn.Module
    """The ``DiffusionStep`` as accelerate prepared it."""
    optimizer: Any
    scheduler: Any
    total_steps: int
    working: "WorkingCopies | None"
    ema: "EMA | None"
    previews: "list[Preview]"
    header: dict[str, Any]
    """The run's facts for every saved file's header."""

    def __init__(self, config: "LoraTrainerConfig", job: "LoadedJob", arch: "ArchRef", *,
                 load_model: ModelLoader, data: DataFactory):
        self.config = config
        self.job = job
        self.arch = arch
        self.name = job.name
        self.folder = run_folder_path(config.training_folder, job.name)
        self.saves = SaveFiles(self.folder, self.name, config.save.max_step_saves_to_keep)
        self._load_model = load_model
        self._make_data = data
        self.run_folder: "RunFolder | None" = None
        self.log = TrainLog(self.folder, enabled=False, total_steps=0, start_step=0, config=config.logging, run_name=self.name)
        self.step = 0
        self.position: Any = None
        self.stop = StopSignals()
        self.sharded = False
        """The frozen denoiser is sharded across the processes (``train.distributed: fsdp`` with several of them)."""
        self._gradients_checked = False
        self._graphed = False
        """Compiled blocks replay CUDA graphs (``train.compile_mode``): each micro-batch marks where a step begins."""

    def run(self) -> None:
        """The whole run: setup, train, cleanup (the error that ends a run goes into its log.txt)."""
        try:
            self.setup()
            with self.saves.guard():  # a refused save or a full disk stops the run, naming the last good save
                self.train()
        except BaseException as error:
            self.cleanup(error)
            raise
        self.cleanup()

    # --- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Build every part of the run, in order, then resume from the newest training state (if any)."""
        from accelerate.utils import set_seed

        from toolkit.devices import resolve_dtype

        train = self.config.train
        self.accelerator = make_accelerator(self.config)
        if not self.accelerator.is_main_process:
            log.setLevel(logging.ERROR)  # the main process reports; the others only speak up about errors
        self.device = run_device(self.config, self.accelerator)
        self._open_run_folder()
        self._check_precision()
        self.sharded = train.distributed == "fsdp" and self.accelerator.num_processes > 1
        if train.distributed == "fsdp" and not self.sharded:
            log.info("train.distributed fsdp: one process, so nothing is sharded.")
        set_seed(train.seed)
        # Sharded, the denoiser waits in CPU memory (as low_vram parks it) until it is split across the devices.
        model = self.config.model.model_copy(update={"low_vram": True}) if self.sharded else self.config.model
        self.adapter = self._load_model(model, self.arch, device=self.device,
                                        dtype=resolve_dtype(self.config.model.dtype or train.dtype))
        for module in [*self.adapter.components().values(), self.adapter.vae]:
            module.requires_grad_(False)
        self._prepare_data()
        self._offload_unused()
        # Seeded again: loading (a tiny model built or read from its cache) and filling the caches use the global
        # generator by different amounts, and the adapter's initial weights must not depend on that.
        set_seed(train.seed)
        self.network = self._build_network()
        self.params = list(self.network.parameters())
        set_seed(train.seed + self.accelerator.process_index)
        self._build_optimization()
        self.previews = self._preview_requests()
        self.header = self._lora_facts()
        self.load_checkpoint()

    def _open_run_folder(self) -> None:
        """Lock the run folder (a second run of it exits 2), remove the temp files of a write a kill cut short,
        write config.yaml and start log.txt (main process only)."""
        from toolkit.output import RunFolder

        if self.accelerator.is_main_process:
            self.run_folder = RunFolder(self.config.training_folder, self.name)
            self.run_folder.open(self.job.resolved)

    def _check_precision(self) -> None:
        """Warn about fp16 without loss scaling; fail early when ``train.compile`` cannot work here."""
        train = self.config.train
        if train.dtype == "fp16" and self.accelerator.scaler is None:
            log.warning(f"warning: train.dtype fp16 on {self.device.type} runs without autocast and loss scaling "
                        "(accelerate has them for GPUs only); bf16 or fp32 train better here.")
        if train.compile:
            from toolkit.models.memory import check_compile

            check_compile(self.device)

    def _prepare_data(self) -> None:
        """This process's share of the data, reported, with its caches filled."""
        accelerator = self.accelerator
        world = accelerator.num_processes
        self.data = self._make_data(bucket_divisibility=self.adapter.bucket_divisibility, rank=accelerator.process_index,
                                    world_size=world, references=self.adapter.arch.spec.references)
        for line in self.data.report() if accelerator.is_main_process else []:
            log.info(line)
        # With several ranks the disk caches are filled together, each rank encoding its share.
        barrier = accelerator.wait_for_everyone if world > 1 else None
        self.data.prepare(self.adapter, cache_text=self.config.train.cache_text_embeddings, barrier=barrier)

    def _offload_unused(self) -> None:
        """Move off the device what training never calls once the caches are filled: the text encoders with
        ``unload_text_encoder`` (which needs cached embeddings), the VAE when every dataset caches its latents."""
        cfg = self.config
        names = list(self.adapter.text_encoders) if cfg.train.unload_text_encoder else []
        if all(dataset.cache_latents or dataset.cache_latents_to_disk for dataset in cfg.datasets):
            names.append("vae")
        self.offloaded = names
        self.memo = None if cfg.train.train_text_encoder else EncoderMemo(self.adapter, [n for n in names if n != "vae"])
        if names:
            self.adapter.move(names, "cpu")
            log.info(f"{', '.join(names)} moved to the CPU for training (their outputs are cached).")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _build_network(self) -> "Network":
        """Checkpointing switches, the network, then the denoiser's placement (low_vram, offloading) and compile."""
        from toolkit.models.memory import compile_blocks, offloaded, place_denoiser, uses_cuda_graphs
        from toolkit.train.checkpointing import enable_checkpointing
        from toolkit.train.network import build_network

        adapter, train = self.adapter, self.config.train
        interval = None
        if train.gradient_checkpointing:
            if train.train_unet:
                interval = enable_checkpointing(adapter.denoiser, adapter.denoiser_name, train.gradient_checkpointing_interval)
            for encoder_name, encoder in adapter.text_encoders.items() if train.train_text_encoder else []:
                enable_checkpointing(encoder, encoder_name)
        elif self.config.model.layer_offloading:
            log.warning("warning: model.layer_offloading without train.gradient_checkpointing saves little memory in "
                        "training: the backward pass keeps every block's weights on the device. Turn checkpointing on.")
        network = build_network(self.config, adapter)
        if self.sharded:
            from toolkit.train.sharding import local_bytes, shard_denoiser

            count = shard_denoiser(adapter, network.parameters(), self.device)
            log.info(f"train.distributed fsdp: the {adapter.denoiser_name} is sharded across {self.accelerator.num_processes} "
                     f"processes ({count} blocks; {local_bytes(adapter.denoiser) / 2 ** 30:.2f} GiB of it on each)")
        place_denoiser(adapter)
        if interval is not None:
            interval.always_checkpoint(offloaded(adapter.denoiser))
            log.info(f"gradient checkpointing: one {adapter.denoiser_name} block in {interval.interval}"
                     + (" (and every offloaded one)" if interval.always else ""))
        network.to(adapter.device)
        if train.compile:
            streamed = offloaded(adapter.denoiser)
            count = compile_blocks(adapter.compile_units(), skip=streamed, mode=train.compile_mode, constant_floats=True)
            self._graphed = uses_cuda_graphs(train.compile_mode, self.device)
            mode = "" if train.compile_mode == "default" else f", mode {train.compile_mode}"
            log.info(f"torch.compile: {count} {adapter.denoiser_name} blocks{mode} (the first steps are slow while they compile)"
                     + (f"; {len(streamed)} offloaded blocks run uncompiled" if streamed else ""))
        return network

    def _build_optimization(self) -> None:
        """The step module, optimizer, step count and lr schedule (prepared by accelerate), working copies, EMA."""
        from toolkit.train.ema import EMA
        from toolkit.train.lr import build_scheduler
        from toolkit.train.network import learning_rates
        from toolkit.train.noise import objective_for
        from toolkit.train.optimizers import build_optimizer
        from toolkit.train.preservation import preservation_for
        from toolkit.train.step import DiffusionStep
        from toolkit.train.working import working_copies_for

        train, adapter, accelerator = self.config.train, self.adapter, self.accelerator
        self.generator = torch.Generator().manual_seed((train.seed + 1_000_003 * (accelerator.process_index + 1)) % 2 ** 63)
        step_module = DiffusionStep(adapter, self.network, objective_for(adapter.noise_schedule(), train),
                                    loss_type=train.loss_type, huber_c=train.huber_c,
                                    train_text_encoder=train.train_text_encoder, generator=self.generator,
                                    preservation=preservation_for(train, self.config.trigger_word))
        groups = self.network.param_groups(learning_rates(self.config, adapter), train.lr)
        self.working = working_copies_for(self.config, accelerator, groups, self.network)  # the optimizer may step their buffers
        optimizer = build_optimizer(train.optimizer, self.working.optimizer_groups(groups) if self.working else groups,
                                    train.lr, dict(train.optimizer_params))
        self.total_steps = train.total_steps(self.data.steps_per_epoch())
        self.scheduler = build_scheduler(train.lr_scheduler, optimizer, warmup_steps=train.lr_warmup_steps,
                                         total_steps=self.total_steps, params=dict(train.lr_scheduler_params))
        self.model, self.optimizer = accelerator.prepare(step_module, optimizer, device_placement=[False, False])
        self.ema = EMA(self.params, train.ema_config.ema_decay) if train.ema_config.use_ema else None

    def _preview_requests(self) -> "list[Preview]":
        from toolkit.train.sampling import preview_requests

        sample = self.config.sample
        return preview_requests(sample, self.arch) if sample is not None and not self.config.train.disable_sampling else []

    def load_checkpoint(self) -> None:
        """Continue from the newest training state of this run, if there is one."""
        path = latest_state(self.folder, self.name)
        self.position = self.data.position()
        if path is None:
            return
        state = load_state(path)
        accelerator = self.accelerator
        if state["world_size"] != accelerator.num_processes:
            raise EaselError(f"{path} was written by {state['world_size']} processes, this run has "
                             f"{accelerator.num_processes}; resume with the same number of processes.")
        try:
            self.network.load_state_dict({k: v.to(self.device) for k, v in state["network"].items()})
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise EaselError(state_mismatch(path, err, state["optimizer"], self.optimizer.state_dict())) from None
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if accelerator.scaler is not None and state["scaler"] is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"][accelerator.process_index], self.generator)
        self.step = int(state["step"])
        self.position = self.data.position(state["position"])
        log.info(f"Resuming from {path.name} at step {self.step}.")

    # --- train -------------------------------------------------------------------------------------------------

    def train(self) -> None:
        """Train from the resumed step to the last, sampling and saving on the way."""
        cfg = self.config
        if self.step >= self.total_steps:
            log.info(f"Already trained to step {self.step} of {self.total_steps}; nothing to do. "
                     f"Raise train.steps to train further.")
            return
        self._start_log()
        self._train_mode()
        if (self.step == 0 or cfg.train.force_first_sample) and self.previews and not cfg.train.skip_first_sample:
            self.sample()
        batches = self.data.batches(self.position)
        requests = Requests(self.folder, enabled=self.accelerator.is_main_process)  # "save now" / "sample now" (toolkit.train.requests)
        with self.stop:
            while self.step < self.total_steps:
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self._train_step(batches)
                self.step += 1
                self.log.step(self.step, loss, lr, time.perf_counter() - started)
                stopping = self._agree(self.stop.signum is not None)
                last = self.step == self.total_steps
                asked = requests.take()
                if not last and (stopping or self._due(cfg.save.save_every) or self._agree("save" in asked)):
                    self.save_checkpoint(final=False)
                if stopping and not last:
                    self._interrupted()
                if not last and self.previews and (
                    (self._due(cfg.sample.sample_every) and self.step >= cfg.sample.sample_start_step)
                    or self._agree("sample" in asked)
                ):
                    self.sample()
        self._check_processes_agree()
        self.save_checkpoint(final=True)
        if self.previews:
            self.sample()
        self._finish()

    def _start_log(self) -> None:
        """Say what is trained, and start the progress bar, loss.csv and trackers."""
        cfg, train, main = self.config, self.config.train, self.accelerator.is_main_process
        summary = [f"Training {self.name}: {self.total_steps} steps on {self.accelerator.num_processes} x {self.device} "
                   f"({train.dtype} compute, base weights {self.adapter.dtype}), batch {train.batch_size} x accumulation "
                   f"{train.gradient_accumulation}, {train.optimizer} lr {train.lr:g} ({train.lr_scheduler})",
                   *(f"  {cfg.network.type} on {line}" for line in self.network.summary())]
        summary += [f"  {self.working.describe()}"] if self.working is not None else []
        for line in summary if main else []:
            log.info(line)
        self.log = TrainLog(self.folder, enabled=main, total_steps=self.total_steps, start_step=self.step,
                            config=cfg.logging, run_name=self.name)

    def _train_mode(self) -> None:
        """The trained components in train mode, as training scripts put them: models are loaded in eval mode,
        which would turn the adapter's dropout off (previews switch to eval and back)."""
        train = self.config.train
        if train.train_unet:
            self.adapter.denoiser.train()
        for encoder in self.adapter.text_encoders.values() if train.train_text_encoder else []:
            encoder.train()

    def _train_step(self, batches: Iterator[tuple[Any, Any]]) -> float:
        """One optimizer step over ``gradient_accumulation`` batches; returns the mean loss over batches and processes."""
        accelerator, model, optimizer = self.accelerator, self.model, self.optimizer
        accumulation, max_grad_norm = self.config.train.gradient_accumulation, self.config.train.max_grad_norm
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        mean = math.nan
        for _ in range(accumulation):
            batch, self.position = next(batches)
            if self._graphed:
                torch.compiler.cudagraph_mark_step_begin()
            with accelerator.accumulate(model):
                with self.working.active() if self.working is not None else nullcontext():
                    loss = model(batch)
                    accelerator.backward(loss)
                total += loss.detach().float()
                if not self._gradients_checked:
                    self._check_gradients()
                if accelerator.sync_gradients:
                    # The step's one host sync: after the backward pass is queued, before the weights move. The
                    # mean over processes is not finite when any process's loss is not, so all stop together.
                    mean = float(accelerator.reduce(total / accumulation, "mean").item())
                    self._check_finite(mean)
                    # without a loss scaler accelerate's optimizer wrapper only adds checks (XLA, LOMO) per call
                    stepper = optimizer if accelerator.scaler is not None else optimizer.optimizer
                    if self.working is not None and accelerator.scaler is None:
                        self.working.step(stepper, max_grad_norm)  # clipped and stepped over the flat buffers
                    else:
                        if max_grad_norm > 0:
                            accelerator.clip_grad_norm_(self.params, max_grad_norm)
                        stepper.step()
                        stepper.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step()
        return mean

    def _check_finite(self, loss: float) -> None:
        """Stop before a non-finite loss reaches the weights."""
        if math.isfinite(loss):
            return
        raise EaselError(f"the loss became {loss} at step {self.step + 1}: training diverged, so it stopped "
                         f"({self.saves.last_good()}). Lower train.lr, use train.max_grad_norm (e.g. 1.0), or train in bf16/fp32 instead of fp16.")

    def _check_gradients(self) -> None:
        """After the first backward pass: every trained component's adapter must have received a gradient."""
        self._gradients_checked = True
        starved = [component for component, params in self.network.parameters_by_component().items()
                   if all(p.grad is None for p in params)]
        if starved:
            raise EaselError(f"no gradient reached the adapter on {', '.join(starved)}: the architecture computes "
                             f"it without gradients (e.g. encode_prompts under torch.no_grad), so it cannot be trained.")

    def _check_processes_agree(self) -> None:
        """Data-parallel runs: every process must end with the same adapter weights (a cheap checksum, all-gathered)."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return
        with torch.no_grad():
            weights = [p.detach().to(torch.float64) for p in self.params]
            checksum = torch.stack([sum(w.sum() for w in weights), sum((w * w).sum() for w in weights)]).to(self.device)
        sums = accelerator.gather(checksum.unsqueeze(0))
        if not bool((sums == sums[0]).all()):
            raise EaselError(f"the {accelerator.num_processes} processes ended with different adapter weights "
                             f"(checksums {sums.tolist()}): data-parallel training went out of sync. Please report this.")
        if accelerator.is_main_process:
            log.info(f"All {accelerator.num_processes} processes hold identical adapter weights "
                     f"(checksum {float(sums[0, 0]):.10g}).")

    def _agree(self, flag: bool) -> bool:
        """True when any process wants it (all processes must stop at the same step)."""
        if self.accelerator.num_processes == 1:
            return flag
        value = torch.tensor(1.0 if flag else 0.0, device=self.device)
        return bool(self.accelerator.reduce(value, "sum").item() > 0)

    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % int(every) == 0  # type: ignore[operator]

    def _interrupted(self) -> None:
        signum = self.stop.signum or signal.SIGINT
        log.warning(f"Stopped at step {self.step} of {self.total_steps} and saved. To continue, run the same "
                    f"command again: python run.py {self.job.source}")
        raise Interrupted(signum)

    def sample(self) -> None:
        """The previews of this step, made and written on the main process (the others wait; with a sharded denoiser
        they make the same previews too, since every process takes part in each of its forward passes)."""
        from toolkit.train.sampling import make_previews, save_previews

        main = self.accelerator.is_main_process
        if main or self.sharded:  # a sharded denoiser runs only with every process taking part
            images = make_previews(self.adapter, self.network, self.ema, self.previews, self.offloaded,
                                   self.config.model.inference_lora_path, self.memo)
        if main:
            sample = self.config.sample
            labels = [preview.request.prompt for preview in self.previews]
            samples = self.folder / "samples"
            paths = save_previews(images, samples, self.step, sample.format if sample is not None else "png", labels)
            self.log.write(f"step {self.step}: {len(paths)} previews in {samples}")
        self.accelerator.wait_for_everyone()

    # --- save, finish, cleanup ---------------------------------------------------------------------------------

    def save_checkpoint(self, *, final: bool) -> None:
        """The LoRA file of this step (EMA weights when EMA is on) and the training state beside it (main process
        only; the others wait). ``final``: the run's own ``<name>.safetensors`` instead of a numbered file."""
        rngs = self._gather_rng()
        if self.accelerator.is_main_process:
            path = self.saves.final_lora if final else self.saves.step_lora(self.step)
            metadata = lora_metadata(step=self.step, **self.header)
            with self.ema.swapped() if self.ema is not None else nullcontext():
                if self.config.train.merge_network_on_save:
                    path = save_merged(self._load_model, self.config.model, self.arch, self.network, path,
                                       self.config.save, self.config.train.merge_network_on_save_strength)
                else:
                    save_lora(self.network, path, arch=self.adapter.arch, format=self.config.save.format,
                              metadata=metadata, dtype=self.config.save.dtype, adapter=self.adapter)
            self.log.write(f"step {self.step}: saved {path}")
            save_state(state_path(self.folder, self.name, self.step), self._state(rngs))
            for removed in self.saves.prune():
                log.debug(f"removed old save {removed}")
        self.accelerator.wait_for_everyone()

    def _lora_facts(self) -> dict[str, Any]:
        """What every saved file's header says about the run (see ``toolkit.train.checkpoint.lora_metadata``)."""
        cfg = self.config
        captions = self.data.dataset_captions()
        return dict(name=self.name, base_model=cfg.model.name_or_path, network=cfg.network, train=cfg.train,
                    trigger_word=cfg.trigger_word, resolution=sorted({r for d in cfg.datasets for r in d.resolution}),
                    images=sum(len(c) for c in captions.values()), tag_frequency=tag_frequency(captions),
                    prediction_type=self.adapter.noise_schedule().prediction_type, config=self.job.resolved,
                    meta=self.job.meta.model_dump(exclude_defaults=True))

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = capture_rng(self.generator)
        if self.accelerator.num_processes == 1:
            return [mine]
        from accelerate.utils import gather_object

        return list(gather_object([mine]))

    def _state(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        """The training state that ``load_checkpoint`` continues from."""
        scaler = self.accelerator.scaler
        return {
            "step": self.step,
            "position": dataclasses.asdict(self.position),
            "network": {k: v.detach().to("cpu", torch.float32) for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rngs,
            "world_size": self.accelerator.num_processes,
        }

    def _finish(self) -> None:
        """Close the log and draw the loss curve."""
        self.log.close()
        curve = self.log.plot()
        if self.accelerator.is_main_process:
            log.info(f"Done: {self.saves.final_lora} after {self.step} steps" + (f"; loss curve in {curve}" if curve else "") + ".")

    def cleanup(self, error: BaseException | None = None) -> None:
        """Close the log and the run folder; the error that ended the run (if any) goes into log.txt too."""
        self.log.close()
        if self.run_folder is not None:
            if isinstance(error, Exception):
                self.run_folder.record(f"error: {error}")
            self.run_folder.close()
            self.run_folder = None


def make_accelerator(config: "LoraTrainerConfig") -> "Accelerator":
    """The Accelerator: mixed precision from train.dtype, accumulation, one process per device.

    accelerate keeps its settings in process-wide singletons; they are cleared first (keeping the
    distributed setup) so that several training processes or configs can run one after another.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from toolkit.devices import resolve_device

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise EaselError("this run was launched with an FSDP accelerate config, which would shard only the small adapter. "
                         "easel shards the frozen base itself: launch with a plain multi-GPU config (accelerate launch "
                         "--multi_gpu --num_processes N run.py CONFIG) and set train.distributed: fsdp in the config.")
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    train = config.train
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[train.dtype]
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=train.gradient_accumulation,
                       cpu=resolve_device(config.device).type == "cpu", step_scheduler_with_optimizer=False)


def run_device(config: "LoraTrainerConfig", accelerator: "Accelerator") -> torch.device:
    """The process's own device under a launcher, else the configured one."""
    from toolkit.devices import resolve_device

    return accelerator.device if accelerator.num_processes > 1 else resolve_device(config.device)
