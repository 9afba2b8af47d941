"""``type: lora_trainer`` (``job: extension``): plans the run for --dry-run, or builds the training recipe and runs it.

This process is where the trainer's collaborators are chosen: the real model loader and ``TrainData`` over the
config's datasets. The training itself, top to bottom, is ``toolkit.train.recipe.LoraTrainingRecipe``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.config.train import LoraTrainerConfig
from toolkit.data.loader import EmptyDataset, TrainData
from toolkit.data.scan import dataset_problem
from toolkit.job import Process
from toolkit.models.memory import describe
from toolkit.output import run_folder_path

if TYPE_CHECKING:
    from toolkit.registry import ArchRef


class LoraTrainerProcess(Process):
    """``type: lora_trainer`` (aliases ``sd_trainer``, ``diffusion_trainer``)."""

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
        errors += [self.config_error(("datasets", index, "control_path"), f"the control folder '{folder}' does not exist; "
                                     "point control_path at the folder of reference images, named like their targets.")
                   for index, dataset in enumerate(self.config.datasets) for folder in dataset.control_path
                   if not Path(folder).is_dir()]
        errors += [self.config_error(("datasets", index, "mask_path"), f"the mask folder '{dataset.mask_path}' does not "
                                     "exist; point mask_path at a folder of masks named like the images.")
                   for index, dataset in enumerate(self.config.datasets)
                   if dataset.mask_path and not Path(dataset.mask_path).expanduser().is_dir()]
        pretrained = self.config.network.pretrained_lora_path
        if pretrained and _looks_local(pretrained) and not Path(pretrained).expanduser().is_file():
            errors.append(self.config_error(("network", "pretrained_lora_path"), f"the LoRA file '{pretrained}' does not exist."))
        if self.config.sample is not None:
            errors += self._preview_image_problems()
            errors += self._control_problems()
        self.raise_together(errors)

    def _preview_image_problems(self) -> list:
        """Preview image files that do not exist: ``ctrl_img`` (..3) as reference images of an edit model, else
        ``ctrl_img`` as a ControlNet's control image (see ``SampleItem.ctrl_img``), and the ControlNets' own."""
        sample = self.config.sample
        if self.arch.spec.references is not None:
            images = [(("sample", "samples", n, key), path, "reference") for n, item in enumerate(sample.samples)
                      for key, path in item.reference_keys()]
        else:
            images = [(("sample", "samples", n, "ctrl_img"), item.ctrl_img, "control") for n, item in enumerate(sample.samples)]
        images += [(("sample", "controlnets", n, "image"), control.image, "control") for n, control in enumerate(sample.controlnets)]
        return [self.config_error(where, f"the {kind} image '{image}' does not exist.")
                for where, image, kind in images if image and not Path(image).expanduser().is_file()]

    def _control_problems(self) -> list:
        """Preview control images of another shape than their preview's, and depth / pose models not to be had."""
        from toolkit.control.inputs import mismatch, preprocessor_problems

        sample, references = self.config.sample, self.arch.spec.references is not None
        errors = [self.config_error(("sample", "controlnets", *where), f"{message}.")
                  for where, message in preprocessor_problems(sample.controlnets)]
        items = [(("sample", "controlnets"), item) for item in sample.all_prompts()[:len(sample.prompts)]]
        items += [(("sample", "samples", number, "ctrl_img"), item) for number, item in enumerate(sample.samples)]
        if references:  # ctrl_img is a reference image, so every preview reads the ControlNets' own images
            items = [(("sample", "controlnets"), item) for _, item in items[:1]]
        for where, item in items if sample.controlnets and not errors else []:
            files = [Path(image).expanduser() for image in sample.control_images(item, references)]
            problem = mismatch(files) if all(file.is_file() for file in files) else None  # missing ones are reported apart
            if problem:
                errors.append(self.config_error(where, f"{problem}."))
        return errors

    def read_data(self, data_class: Any, **kwargs: Any) -> Any:
        """The training data (``data_class(datasets, ...)``); a dataset left empty is reported at its YAML line."""
        cfg = self.config
        try:
            return data_class(cfg.datasets, trigger_word=cfg.trigger_word, batch_size=cfg.train.batch_size,
                              seed=cfg.train.seed, fallback_cache=self.run_dir / "cache", reg_weight=cfg.train.reg_weight,
                              **kwargs)
        except EmptyDataset as err:
            raise self.config_error(("datasets", err.index, "folder_path"), err.problem, err.hint) from None

    def plan(self) -> list[str]:
        self.check_inputs()
        cfg, arch, net, train = self.config, self.arch, self.config.network, self.config.train
        memory_line = describe(cfg.model)
        lines = [f"process {self.index}: lora_trainer",
                 f"  architecture: {arch.name} from {cfg.model.name_or_path} ({cfg.model.dtype or train.dtype})",
                 *([f"  memory: {memory_line}"] if memory_line else []),
                 *(["  distributed: fsdp (with several processes the frozen denoiser is sharded across them)"]
                   if train.distributed == "fsdp" else []),
                 f"  network: {net.type} rank {net.linear} alpha {net.linear_alpha:g}"
                 + (f", conv rank {net.conv} alpha {net.conv_alpha:g}" if net.conv else ""),
                 "  datasets:"]
        data = self.read_data(TrainData, bucket_divisibility=arch.spec.bucket_divisibility, references=arch.spec.references)
        lines += [f"    {line}" for line in data.report()]
        batches = data.steps_per_epoch()
        lines.append(f"  training: {train.total_steps(batches)} steps ({batches / train.gradient_accumulation:g} per epoch), "
                     f"batch {train.batch_size} x accumulation {train.gradient_accumulation}, {train.optimizer} lr {train.lr:g} "
                     f"({train.lr_scheduler}), {train.dtype}")
        if cfg.sample is not None and not train.disable_sampling:
            sample = cfg.sample
            lines.append(f"  samples: every {sample.sample_every} steps, {len(sample.all_prompts())} prompts -> {self.run_dir / 'samples'}")
            lines += [f"    controlnet {index}: {control.path} (scale {control.scale:g}, preprocess {control.preprocess.type}) reading "
                      f"{control.image or 'the ctrl_img of each prompt'}" for index, control in enumerate(sample.controlnets)]
        from toolkit.train.preservation import preservation_summary

        extras = preservation_summary(train)
        lines += [f"  loss: {extras}"] if extras else []
        save = cfg.save
        every = f"every {save.save_every} steps, keep {save.max_step_saves_to_keep or 'all'}" if save.save_every else "at the end"
        merged = f"the merged model ({save.save_format})" if train.merge_network_on_save else save.dtype
        lines.append(f"  saves: {every}, {merged} -> {self.run_dir / (self.job.name + '.safetensors')}")
        return lines

    def run(self) -> None:
        """Train: the recipe with the real model loader and data."""
        from toolkit.models.loading import load_model
        from toolkit.train.recipe import LoraTrainingRecipe

        self.check_inputs()
        LoraTrainingRecipe(self.config, self.job.loaded, self.arch, load_model=load_model,
                           data=partial(self.read_data, TrainData)).run()


def _looks_local(path: str) -> bool:
    """A path (not a hub file ``owner/repo/file``): absolute, relative with ./, or just a file name or folder/file."""
    return Path(path).is_absolute() or path.startswith((".", "~")) or len(Path(path).parts) < 3
