"""Every key ai-toolkit reads is known: implemented, accepted and ignored (named once, some with a warning of
their own), or refused with its reason when easel would train something else; the table and the schema agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toolkit.config import aitoolkit
from toolkit.config.aitoolkit_keys import BLOCKS, IMPLEMENTED, OTHER_ARCH, REFUSED, UNSET, WARNED, Same
from toolkit.config.blocks import DatasetConfig, EMAConfig, LoggingConfig, NetworkConfig, NetworkKwargs, SampleConfig, SampleItem, SaveConfig, TrainConfig
from toolkit.config.job import load_job_config
from toolkit.config.messages import keys_at
from toolkit.config.train import LoraTrainerConfig
from toolkit.errors import ConfigError
from toolkit.output import dump_yaml

from tests.conftest import ROOT

SUB_BLOCKS = {"network": ("network",), "network.network_kwargs": ("network", "network_kwargs"), "save": ("save",),
              "datasets[]": ("datasets", 0), "train": ("train",), "train.ema_config": ("train", "ema_config"),
              "model": ("model",), "sample": ("sample",), "sample.samples[]": ("sample", "samples", 0), "logging": ("logging",)}
"""Where each block sits in a trainer process."""
NESTED = {"network", "train", "model", "save", "sample", "logging", "datasets", "network_kwargs", "ema_config", "samples"}

EXAMPLES: dict[str, dict[str, Any]] = {
    "process[]": {"type": "sd_trainer", "training_seed": 7, "device": "cpu", "trigger_word": "sks"},
    "network": {"type": "lora", "rank": 8, "linear": 8, "conv": 4, "alpha": 4, "linear_alpha": 4, "conv_alpha": 2,
                "dropout": 0.1, "lokr_full_rank": False, "lokr_factor": -1, "pretrained_lora_path": None},
    "network.network_kwargs": {"ignore_if_contains": ["to_k"], "only_if_contains": ["attn"]},
    "save": {"save_every": 50, "dtype": "bf16", "max_step_saves_to_keep": 2},
    "datasets[]": {"default_caption": "a photo", "trigger_word": "sks", "caption_ext": "txt", "caption_type": "txt",
                   "random_crop": False, "resolution": [64], "is_reg": False, "token_dropout_rate": 0.1,
                   "shuffle_tokens": True, "caption_dropout_rate": 0.05, "keep_tokens": 1, "flip_x": True, "flip_y": False,
                   "num_repeats": 2, "cache_latents": False, "cache_latents_to_disk": False},
    "train": {"noise_scheduler": "ddpm", "steps": 10, "lr": 2e-4, "unet_lr": 2e-4, "text_encoder_lr": 1e-5,
              "optimizer": "adamw", "optimizer_params": {"weight_decay": 0.01}, "lr_scheduler": "cosine",
              "lr_scheduler_params": {}, "batch_size": 2, "dtype": "bf16", "train_unet": True, "train_text_encoder": False,
              "min_snr_gamma": 5.0, "snr_gamma": 5.0, "noise_offset": 0.05, "gradient_checkpointing": True,
              "max_grad_norm": 1.0, "gradient_accumulation_steps": 1, "gradient_accumulation": 1, "loss_type": "mse",
              "timestep_type": "sigmoid", "content_or_style": "style", "skip_first_sample": True,
              "disable_sampling": False, "unload_text_encoder": False, "cache_text_embeddings": False},
    "train.ema_config": {"use_ema": True, "ema_decay": 0.995},
    "model": {"name_or_path": "tiny:sdxl", "is_xl": True, "is_ssd": False, "is_vega": False, "is_v_pred": False,
              "dtype": "bf16", "vae_path": None, "assistant_lora_path": None, "quantize": False, "quantize_te": False,
              "qtype": "qfloat8", "qtype_te": "qfloat8", "low_vram": False, "arch": "sdxl", "auto_memory": False,
              "layer_offloading": False, "layer_offloading_transformer_percent": 0.5, "extras_name_or_path": None,
              "compile": True, "model_kwargs": {}},
    "sample": {"sampler": "ddpm", "sample_every": 5, "width": 64, "height": 64, "neg": "blurry", "seed": 3,
               "walk_seed": True, "guidance_scale": 6, "sample_steps": 2, "network_multiplier": 1, "guidance_rescale": 0.0,
               "format": "jpg", "prompts": []},
    "sample.samples[]": {"prompt": "[trigger] a cat", "width": 64, "height": 64, "neg": "", "seed": 1, "guidance_scale": 5,
                         "sample_steps": 2, "network_multiplier": 0.8},
    "logging": {"log_every": 1, "verbose": False, "use_wandb": False, "project_name": "p", "run_name": "r"},
}
"""Plausible values of the implemented keys (the others are set to ai-toolkit's defaults)."""


def _plain(value: Any) -> Any:
    return None if isinstance(value, Same) else value


def full_process(folder: Path) -> dict[str, Any]:
    """A trainer process with every ai-toolkit key of every block set."""
    blocks: dict[str, dict[str, Any]] = {}
    for block, keys in BLOCKS.items():
        values = {key.name: _plain(key.default) for key in keys if key.name not in NESTED}
        blocks[block] = {**values, **EXAMPLES.get(block, {})}
    process = blocks["process[]"]
    process.update(training_folder=str(folder / "out"), log_dir=str(folder / "tb"))
    process["network"] = {**blocks["network"], "network_kwargs": blocks["network.network_kwargs"]}
    process["train"] = {**blocks["train"], "ema_config": blocks["train.ema_config"]}
    process["model"] = blocks["model"]
    process["save"] = blocks["save"]
    process["sample"] = {**blocks["sample"], "samples": [blocks["sample.samples[]"]]}
    process["logging"] = blocks["logging"]
    process["datasets"] = [{**blocks["datasets[]"], "folder_path": str(folder / "images")}]
    return process


def write_job(tmp_path: Path, process: dict[str, Any]) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(dump_yaml({"job": "extension", "config": {"name": "every_key", "process": [process]}}))
    return path


def _set(process: dict[str, Any], block: str, name: str, value: Any) -> None:
    target: Any = process
    for part in SUB_BLOCKS.get(block, ()):
        target = target[part]
    target[name] = value


def _other_value(default: Any) -> Any:
    """A value that is not ``default``."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default + 3
    if isinstance(default, list):
        return ["x"]
    if isinstance(default, dict):
        return {"x": 1}
    return "other"


def test_every_ai_toolkit_key_of_every_block_dry_runs(registry, tmp_path):
    import run
    from tests.test_run import image_folder

    image_folder(tmp_path)
    path = write_job(tmp_path, full_process(tmp_path))
    loaded = load_job_config(path, registry)
    unused = {f"{block}.{key.name}" for block, keys in BLOCKS.items() for key in keys
              if key.status != IMPLEMENTED and key.name not in NESTED}
    assert set(loaded.ignored) == unused
    process = loaded.processes[0]
    assert (process.train.compile, process.train.seed, process.logging.log_dir) == (True, 7, str(tmp_path / "tb"))
    assert (process.network.linear, process.network.linear_alpha, process.model.arch) == (8, 4, "sdxl")
    assert process.model.layer_offloading_fraction == 0.5 and process.datasets[0].caption_ext == "txt"
    assert run.main(["--dry-run", str(path)]) == 0


REFUSABLE = [(block, key) for block, keys in BLOCKS.items() for key in keys if key.status in (REFUSED, OTHER_ARCH)]
WARNABLE = [(block, key) for block, keys in BLOCKS.items() for key in keys
            if key.status == WARNED or (key.status == IMPLEMENTED and key.note)]


def test_every_refused_key_away_from_its_default_is_an_error_at_its_line(registry, tmp_path):
    """All of them in one file: each is reported at its own key with its reason, and nothing else is."""
    process = full_process(tmp_path)
    for block, key in REFUSABLE:
        value = "another" if isinstance(key.default, Same) else _other_value(aitoolkit.default_of(block, key, {}))
        _set(process, block, key.name, value)
    with pytest.raises(ConfigError) as err:
        load_job_config(write_job(tmp_path, process), registry)
    by_path = {issue.path: issue for issue in err.value.issues}
    assert len(err.value.issues) == len(REFUSABLE)
    for block, key in REFUSABLE:
        issue = by_path[("config", "process", 0, *SUB_BLOCKS.get(block, ()), key.name)]
        assert issue.line is not None and "unknown key" not in issue.message
        if key.status == OTHER_ARCH:
            assert key.note in issue.message and all(f" {n}" in issue.message for n in ("sd15", "sdxl", "zimage")), issue.message
        else:
            assert "would train a different LoRA" in issue.message, issue.message


def test_every_warned_key_away_from_its_default_has_a_warning_of_its_own(registry, tmp_path):
    process = full_process(tmp_path)
    process["train"].pop("gradient_accumulation")
    for block, key in WARNABLE:
        value = _other_value(aitoolkit.default_of(block, key, {}))
        value = 2 if key.status == IMPLEMENTED and not isinstance(value, bool) else value
        _set(process, block, key.name, "another" if isinstance(key.default, Same) else value)
    loaded = load_job_config(write_job(tmp_path, process), registry)
    assert len(loaded.warnings) == len(WARNABLE), loaded.warnings
    for block, key in WARNABLE:
        assert [line for line in loaded.warnings if line.startswith(f"{block}.{key.name}: ")], f"{block}.{key.name}"


MODELS = {"process[]": LoraTrainerConfig, "network": NetworkConfig, "network.network_kwargs": NetworkKwargs, "save": SaveConfig,
          "datasets[]": DatasetConfig, "train": TrainConfig, "train.ema_config": EMAConfig, "sample": SampleConfig,
          "sample.samples[]": SampleItem, "logging": LoggingConfig}


def _model_of(block: str):
    from toolkit.config.blocks import ModelConfig

    return ModelConfig if block == "model" else MODELS[block]


@pytest.mark.parametrize("block", list(BLOCKS))
def test_the_table_and_the_schema_agree(block, registry):
    model = _model_of(block)
    fields = set(keys_at(model, ())) - set(model.ignored_keys)
    assert model.block_name == block and model.aitoolkit
    flags = registry.legacy_arch_flags()
    for key in BLOCKS[block]:
        if key.status != IMPLEMENTED:
            assert key.name not in fields, f"{block}.{key.name} is an easel key but the table says {key.status}"
            assert key.name in model.ignored_keys, f"{block}.{key.name} is not dropped"
        elif key.easel == "model.arch":
            assert key.name in flags, f"model.{key.name} selects no registered architecture"
        elif key.easel and "." in key.easel and not key.easel.startswith("model.prediction"):
            head, _, leaf = key.easel.rpartition(".")
            assert leaf in keys_at(LoraTrainerConfig, (head,)), f"{block}.{key.name} moves to {key.easel}, not an easel key"
        elif key.easel and "." not in key.easel:
            assert key.easel in fields, f"{block}.{key.name} is another spelling of {key.easel}, not an easel key"
        elif key.name != "is_v_pred":
            assert key.name in fields, f"{block}.{key.name} is marked implemented but is no key of {model.__name__}"
    assert set(model.ignored_keys) <= set(aitoolkit.table(block)), "ignored keys the table does not list"


@pytest.mark.parametrize("block", [b for b in MODELS if b != "process[]"])
def test_easel_defaults_are_ai_toolkits_where_the_table_says_so(block):
    empty = {"datasets[]": {"folder_path": "x"}, "sample.samples[]": {"prompt": "x"}}.get(block, {})
    built = MODELS[block].model_validate(empty)
    for key in BLOCKS[block]:
        if key.status != IMPLEMENTED or isinstance(key.default, Same) or key.name in NESTED or key.easel or key.name in empty:
            continue
        wanted = key.default if key.easel_default is UNSET else key.easel_default
        if isinstance(wanted, Same):
            continue
        got = getattr(built, key.name)
        assert aitoolkit.is_default(got, wanted) or got == wanted, f"{block}.{key.name}: easel {got!r}, table {wanted!r}"


def test_moved_key_set_in_both_places_is_refused(registry, tmp_path):
    process = full_process(tmp_path)
    process["train"]["compile"] = False
    with pytest.raises(ConfigError, match=r"'compile' is ai-toolkit's place for train.compile, which is set too"):
        load_job_config(write_job(tmp_path, process), registry)


def test_two_spellings_with_different_values_are_still_an_error(registry, tmp_path):
    process = full_process(tmp_path)
    process["network"]["rank"] = 16
    with pytest.raises(ConfigError, match=r"'rank' is another spelling of 'linear'"):
        load_job_config(write_job(tmp_path, process), registry)


def test_false_ai_toolkit_arch_flags_mean_sd15_and_a_typo_still_suggests(registry, tmp_path):
    process = full_process(tmp_path)
    model = process["model"]
    for key in ("arch", "is_xl"):
        model.pop(key)
    model["name_or_path"] = "tiny:sd15"
    loaded = load_job_config(write_job(tmp_path, process), registry)
    assert loaded.processes[0].model.arch == "sd15"
    assert any(line.startswith("model.arch: not set") for line in loaded.warnings)
    model["is_lumina22"] = True
    with pytest.raises(ConfigError, match=r"unknown key 'is_lumina22'; did you mean 'is_lumina2'\?"):
        load_job_config(write_job(tmp_path, process), registry)


def test_ssd_flag_selects_sdxl(registry, tmp_path):
    process = full_process(tmp_path)
    for key in ("arch", "is_xl"):
        process["model"].pop(key)
    process["model"]["is_ssd"] = True
    assert load_job_config(write_job(tmp_path, process), registry).processes[0].model.arch == "sdxl"


def test_key_reference_is_current():
    actual = (ROOT / "docs" / "aitoolkit_keys.md").read_text(encoding="utf-8")
    assert actual == aitoolkit.render_markdown(), "docs/aitoolkit_keys.md is stale: run `python -m toolkit.config.docs`"
