"""The training loop, top to bottom: ``Trainer.train``.

Each optimizer step draws ``gradient_accumulation`` batches; each batch is encoded (or taken from the
caches), noised, denoised and scored (``DiffusionStep``), and its gradient is added. Then the gradient is
clipped, the optimizer and the lr schedule step, the EMA follows, and the step is logged. Saves and
previews happen between steps; a stop signal finishes the current step, saves and exits.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import nullcontext
from types import FrameType
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from toolkit.control import Requests
from toolkit.errors import EaselError, Interrupted
from toolkit.log import log
from toolkit.train.loss import diffusion_loss
from toolkit.train.state import capture_rng, latest_state, load_state, restore_rng, save_state, state_path

if TYPE_CHECKING:
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network
    from toolkit.train.noise import Objective
    from toolkit.train.setup import TrainRun


class DiffusionStep(nn.Module):
    """``forward(batch) -> loss``. Only the network is a submodule, so DDP wraps just the adapter's parameters."""

    def __init__(self, adapter: "ModelAdapter", network: "Network", objective: "Objective", *, loss_type: str,
                 huber_c: float, train_text_encoder: bool, generator: torch.Generator, cast_inputs: bool | None = None):
        """``cast_inputs``: whether the LoRA layers cast their inputs to the adapter dtype; None decides on the first
        call (not under autocast, see ``Network.cast_inputs``)."""
        super().__init__()
        self.network = network
        self.adapter = adapter
        self.objective = objective
        self.loss_type = loss_type
        self.huber_c = huber_c
        self.train_text_encoder = train_text_encoder
        self.generator = generator
        self._cast_inputs = cast_inputs
        if cast_inputs is not None:
            network.cast_inputs(cast_inputs)

    def forward(self, batch: Any) -> torch.Tensor:
        adapter = self.adapter
        device = adapter.device
        if self._cast_inputs is None:  # under mixed precision the LoRA inputs need no cast (see Network.cast_inputs)
            self._cast_inputs = not torch.is_autocast_enabled(device.type)
            self.network.cast_inputs(self._cast_inputs)
        with torch.no_grad():
            if batch.latents is not None:
                latents = batch.latents.to(device)
            else:
                latents = adapter.encode_images(batch.pixels.to(device))
        if batch.cond is not None:
            cond = {key: value.to(device) for key, value in batch.cond.items()}
        else:
            with torch.set_grad_enabled(self.train_text_encoder):
                cond = adapter.encode_prompts(list(batch.captions))
        noised = self.objective.apply(latents, self.generator)
        prediction = adapter.predict(noised.noisy, noised.timesteps, cond, list(batch.image_info))
        return diffusion_loss(prediction, noised.target, self.loss_type, huber_c=self.huber_c, weights=noised.weights)


class StopSignals:
    """SIGINT / SIGTERM set a flag that the loop checks after each step; a second one stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        log.warning(f"\nstop requested (signal {signum}): finishing this step and saving; press Ctrl-C again to stop without saving.")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class Trainer:
    """Runs one prepared training run (see ``toolkit.train.setup.prepare_run``)."""

    def __init__(self, run: "TrainRun"):
        self.run = run
        self.step = 0
        self.position = run.new_position()
        self.stop = StopSignals()
        self.requests = Requests(run.folder, enabled=run.accelerator.is_main_process)
        self._gradients_checked = False

    def train(self) -> None:
        """Resume if a state exists, then train to the last step, sampling and saving on the way."""
        run, cfg = self.run, self.run.config
        self._resume()
        if self.step >= run.total_steps:
            log.info(f"Already trained to step {self.step} of {run.total_steps}; nothing to do. "
                     f"Raise train.steps to train further.")
            return
        run.log_start(self.step)
        self._train_mode()
        if self.step == 0 and run.previews and not cfg.train.skip_first_sample:
            self._sample()
        batches = run.data.batches(self.position)
        with self.stop:
            while self.step < run.total_steps:
                started = time.perf_counter()
                lr = run.optimizer.param_groups[0]["lr"]
                loss = self._train_step(batches)
                self.step += 1
                run.log.step(self.step, loss, lr, time.perf_counter() - started)
                stopping = self._agree(self.stop.signum is not None)
                last = self.step == run.total_steps
                asked = self.requests.take()  # "save now" / "sample now" from outside (toolkit.control)
                if not last and (stopping or self._due(cfg.save.save_every) or self._agree("save" in asked)):
                    self._save(final=False)
                if stopping and not last:
                    self._interrupted()
                if not last and run.previews and (self._due(run.sample_every) or self._agree("sample" in asked)):
                    self._sample()
        self._check_processes_agree()
        self._save(final=True)
        if run.previews:
            self._sample()
        run.finish(self.step)

    def _train_mode(self) -> None:
        """The trained components in train mode, as training scripts put them: models are loaded in eval mode,
        which would turn the adapter's dropout off (previews switch to eval and back)."""
        run, train = self.run, self.run.config.train
        if train.train_unet:
            run.adapter.denoiser.train()
        for encoder in run.adapter.text_encoders.values() if train.train_text_encoder else []:
            encoder.train()

    def _train_step(self, batches: Iterator[tuple[Any, Any]]) -> float:
        """One optimizer step over ``gradient_accumulation`` batches; returns the mean loss over batches and processes."""
        run = self.run
        accelerator, model, optimizer = run.accelerator, run.model, run.optimizer
        total = torch.zeros((), dtype=torch.float32, device=run.device)
        mean = math.nan
        for _ in range(run.accumulation):
            batch, self.position = next(batches)
            with accelerator.accumulate(model):
                with run.working.active() if run.working is not None else nullcontext():
                    loss = model(batch)
                    accelerator.backward(loss)
                total += loss.detach().float()
                if not self._gradients_checked:
                    self._check_gradients()
                if accelerator.sync_gradients:
                    # The step's one host sync: after the backward pass is queued, before the weights move. The
                    # mean over processes is not finite when any process's loss is not, so all stop together.
                    mean = float(accelerator.reduce(total / run.accumulation, "mean").item())
                    self._check_finite(mean)
                    if run.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(run.params, run.max_grad_norm)
                    # without a loss scaler accelerate's optimizer wrapper only adds checks (XLA, LOMO) per call
                    stepper = optimizer if accelerator.scaler is not None else optimizer.optimizer
                    stepper.step()
                    stepper.zero_grad(set_to_none=True)
        run.scheduler.step()
        if run.ema is not None:
            run.ema.step()
        return mean

    def _check_finite(self, loss: float) -> None:
        """Stop before a non-finite loss reaches the weights."""
        if math.isfinite(loss):
            return
        kept = self.run.saves.step_loras()
        where = f"the last good save is {kept[-1][1]}" if kept else "nothing was saved yet"
        raise EaselError(f"the loss became {loss} at step {self.step + 1}: training diverged, so it stopped "
                         f"({where}). Lower train.lr, use train.max_grad_norm (e.g. 1.0), or train in bf16/fp32 instead of fp16.")

    def _check_gradients(self) -> None:
        """After the first backward pass: every trained component's adapter must have received a gradient."""
        self._gradients_checked = True
        starved = [component for component, params in self.run.network.parameters_by_component().items()
                   if all(p.grad is None for p in params)]
        if starved:
            raise EaselError(f"no gradient reached the adapter on {', '.join(starved)}: the architecture computes "
                             f"it without gradients (e.g. encode_prompts under torch.no_grad), so it cannot be trained.")

    def _check_processes_agree(self) -> None:
        """Data-parallel runs: every process must end with the same adapter weights (a cheap checksum, all-gathered)."""
        run = self.run
        if run.accelerator.num_processes == 1:
            return
        with torch.no_grad():
            weights = [p.detach().to(torch.float64) for p in run.params]
            checksum = torch.stack([sum(w.sum() for w in weights), sum((w * w).sum() for w in weights)]).to(run.device)
        sums = run.accelerator.gather(checksum.unsqueeze(0))
        if not bool((sums == sums[0]).all()):
            raise EaselError(f"the {run.accelerator.num_processes} processes ended with different adapter weights "
                             f"(checksums {sums.tolist()}): data-parallel training went out of sync. Please report this.")
        if run.accelerator.is_main_process:
            log.info(f"All {run.accelerator.num_processes} processes hold identical adapter weights "
                     f"(checksum {float(sums[0, 0]):.10g}).")

    def _agree(self, flag: bool) -> bool:
        """True when any process wants it (all processes must stop at the same step)."""
        if self.run.accelerator.num_processes == 1:
            return flag
        value = torch.tensor(1.0 if flag else 0.0, device=self.run.device)
        return bool(self.run.accelerator.reduce(value, "sum").item() > 0)

    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % int(every) == 0  # type: ignore[operator]

    def _interrupted(self) -> None:
        signum = self.stop.signum or signal.SIGINT
        log.warning(f"Stopped at step {self.step} of {self.run.total_steps} and saved. To continue, run the same "
                    f"command again: python run.py {self.run.source}")
        raise Interrupted(signum)

    def _sample(self) -> None:
        """Previews on the main process; the others wait."""
        run = self.run
        if run.accelerator.is_main_process:
            run.sample(self.step)
        run.accelerator.wait_for_everyone()

    def _save(self, *, final: bool) -> None:
        """The LoRA file and the training state (main process only; the others wait)."""
        run = self.run
        rngs = self._gather_rng()
        if run.accelerator.is_main_process:
            run.save_lora(self.step, final=final)
            save_state(state_path(run.folder, run.name, self.step), self._state(rngs))
            for path in run.saves.prune():
                log.debug(f"removed old save {path}")
        run.accelerator.wait_for_everyone()

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = capture_rng(self.run.generator)
        if self.run.accelerator.num_processes == 1:
            return [mine]
        from accelerate.utils import gather_object

        return list(gather_object([mine]))

    def _state(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        import dataclasses

        run = self.run
        scaler = run.accelerator.scaler
        return {
            "step": self.step,
            "position": dataclasses.asdict(self.position),
            "network": {k: v.detach().to("cpu", torch.float32) for k, v in run.network.state_dict().items()},
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rngs,
            "world_size": run.accelerator.num_processes,
        }

    def _resume(self) -> None:
        """Continue from the newest training state of this run, if there is one."""
        run = self.run
        path = latest_state(run.folder, run.name)
        if path is None:
            return
        state = load_state(path)
        if state["world_size"] != run.accelerator.num_processes:
            raise EaselError(f"{path} was written by {state['world_size']} processes, this run has "
                             f"{run.accelerator.num_processes}; resume with the same number of processes.")
        try:
            run.network.load_state_dict({k: v.to(run.device) for k, v in state["network"].items()})
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise EaselError(f"the training state {path} does not fit this config ({err}). The network or optimizer "
                             f"settings changed: use another config.name, or delete the state files to start over.") from None
        if run.ema is not None and state["ema"] is not None:
            run.ema.load_state_dict(state["ema"])
        if run.accelerator.scaler is not None and state["scaler"] is not None:
            run.accelerator.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"][run.accelerator.process_index], run.generator)
        self.step = int(state["step"])
        self.position = run.new_position(**state["position"])
        log.info(f"Resuming from {path.name} at step {self.step}.")


def steps_for(epochs: int, batches_per_epoch: int, accumulation: int) -> int:
    """Optimizer steps for a number of epochs."""
    return max(1, math.ceil(epochs * batches_per_epoch / accumulation))
