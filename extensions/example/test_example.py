"""The example architecture passes the shared adapter suite, and the trainer, the LoRA files and the generate
job work with it as they are: nothing outside this folder knows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import run
from toolkit.lora_io.files import load_lora
from toolkit.testing.adapter_suite import AdapterSuite
from toolkit.testing.demo import make


class TestExample(AdapterSuite):
    arch = "example"
    latent_channels = 4
    sampler = "euler"

    def test_a_run_trains_saves_and_previews(self, registry: Any, tmp_path: Path) -> None:
        make(tmp_path / "data", 4)
        process = {"type": "lora_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu", "trigger_word": "sks",
                   "network": {"linear": 4}, "save": {"dtype": "fp32", "save_every": None},
                   "datasets": [{"folder_path": str(tmp_path / "data"), "resolution": [64]}],
                   "train": {"steps": 3, "batch_size": 2, "lr": 1e-3, "gradient_checkpointing": False},
                   "model": {"name_or_path": "tiny:example", "arch": "example"},
                   "sample": {"sample_every": 100, "prompts": ["[trigger] a house"], "width": 64, "height": 64, "sample_steps": 2}}
        config = tmp_path / "example.json"
        config.write_text(json.dumps({"job": "extension", "config": {"name": "ex", "process": [process]}}))
        assert run.main([str(config)]) == 0
        folder = tmp_path / "out" / "ex"
        lora = load_lora(folder / "ex.safetensors", registry=registry)
        assert lora.arch == "example" and lora.format == "diffusers"  # named in the header, in the spec's default format
        assert lora.modules and all(module.component == "unet" for module in lora.modules.values())
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["000000000_00.png", "000000003_00.png"]
