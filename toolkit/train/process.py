"""The LoRA trainer process: plans (dry run) and runs a training job."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.config.train import LoraTrainerConfig
from toolkit.data.loader import EmptyDataset, TrainData
from toolkit.data.scan import dataset_problem
from toolkit.job import Process
from toolkit.models.memory import describe
from toolkit.output import run_folder_path

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter
    from toolkit.registry import ArchRef


class LoraTrainerProcess(Process):
    """``type: lora_trainer``."""

    config: LoraTrainerConfig

    @property
    def run_dir(self) -> Path:
        return run_folder_path(self.config.training_folder, self.job.name)

    @property
    def arch(self) -> "ArchRef":
        return self.job.registry.arch(self.config.model.arch)

    def check_inputs(self) -> None:
        """Files the config names must exist (checked at --dry-run and before any model loads)."""
        errors = [self.config_error(("datasets", index, "folder_path"), problem) for index, dataset in enumerate(self.config.datasets)
                  if (problem := dataset_problem(dataset.folder_path))]
        pretrained = self.config.network.pretrained_lora_path
        if pretrained and _looks_local(pretrained) and not Path(pretrained).expanduser().is_file():
            errors.append(self.config_error(("network", "pretrained_lora_path"), f"the LoRA file '{pretrained}' does not exist."))
        self.raise_together(errors)

    def plan(self) -> list[str]:
        self.check_inputs()
        cfg = self.config
        arch = self.job.registry.arch(cfg.model.arch)
        net = cfg.network
        memory_line = describe(cfg.model)
        lines = [f"process {self.index}: lora_trainer",
                 f"  architecture: {arch.name} from {cfg.model.name_or_path} ({cfg.model.dtype or cfg.train.dtype})",
                 *([f"  memory: {memory_line}"] if memory_line else []),
                 f"  network: {net.type} rank {net.linear} alpha {net.linear_alpha:g}"
                 + (f", conv rank {net.conv} alpha {net.conv_alpha:g}" if net.conv else ""),
                 "  datasets:"]
        train = cfg.train
        data = self.make_data(TrainData, bucket_divisibility=arch.spec.bucket_divisibility)
        lines += [f"    {line}" for line in data.report()]
        per_epoch = max(1, math.ceil(data.steps_per_epoch() / train.gradient_accumulation))
        steps = train.steps if train.steps is not None else per_epoch * (train.epochs or 1)
        lines.append(f"  training: {steps} steps ({per_epoch} per epoch), batch {train.batch_size} x accumulation "
                     f"{train.gradient_accumulation}, {train.optimizer} lr {train.lr:g} ({train.lr_scheduler}), {train.dtype}")
        if cfg.sample is not None and not train.disable_sampling:
            sample = cfg.sample
            lines.append(f"  samples: every {sample.sample_every} steps, {len(sample.all_prompts())} prompts -> {self.run_dir / 'samples'}")
        save = cfg.save
        every = f"every {save.save_every} steps, keep {save.max_step_saves_to_keep or 'all'}" if save.save_every else "at the end"
        lines.append(f"  saves: {every}, {save.dtype} -> {self.run_dir / (self.job.name + '.safetensors')}")
        return lines

    def load_model(self, device: "torch.device", dtype: "torch.dtype") -> "ModelAdapter":
        """The base model, through the architecture's adapter."""
        from toolkit.models.loading import load_adapter

        return load_adapter(self.config.model, self.job.registry, device=device, dtype=dtype)

    def make_data(self, data_class: Any, **kwargs: Any) -> Any:
        """The training data (``data_class(datasets, ...)``); a dataset left empty is reported at its YAML line."""
        cfg = self.config
        try:
            return data_class(cfg.datasets, trigger_word=cfg.trigger_word, batch_size=cfg.train.batch_size,
                              seed=cfg.train.seed, **kwargs)
        except EmptyDataset as err:
            raise self.config_error(("datasets", err.index, "folder_path"), err.problem, err.hint) from None

    def data_api(self) -> tuple[Any, Any]:
        """The training data class and its position class (``TrainData``, ``LoaderPosition``)."""
        from toolkit.data.loader import LoaderPosition, TrainData

        return TrainData, LoaderPosition

    def run(self) -> None:
        """Train: prepare every part (toolkit.train.setup), then run the loop (toolkit.train.loop)."""
        from toolkit.train.loop import Trainer
        from toolkit.train.setup import prepare_run

        self.check_inputs()
        run = prepare_run(self)
        try:
            with run.saves.guard():  # a refused save or a full disk names the last good save
                Trainer(run).train()
        except BaseException as error:
            run.close(error)
            raise
        run.close()


def _looks_local(path: str) -> bool:
    """A path (not a hub file ``owner/repo/file``): absolute, relative with ./, or just a file name or folder/file."""
    return Path(path).is_absolute() or path.startswith((".", "~")) or len(Path(path).parts) < 3
