"""The jobs ai-toolkit's web UI writes, and its generate example, run a few steps on the tiny models (as they
are, but for CPU-sized settings given with --set: device, steps, resolution, preview size)."""

from __future__ import annotations

from pathlib import Path

import pytest

import run
from toolkit.config.blocks import ModelConfig
from toolkit.models.loading import load_adapter, resolve_source

from tests.config.test_aitoolkit_fixtures import FIXTURES, UI_JOBS
from tests.lora_io.helpers import load_lora, random_lora, save_lora
from tests.test_run import image_folder

pytestmark = pytest.mark.slow
SMALL = ["config.process.0.device=cpu", "config.process.0.train.steps=2", "config.process.0.datasets.0.resolution=[64]",
         "config.process.0.sample.width=64", "config.process.0.sample.height=64", "config.process.0.sample.sample_steps=2"]


@pytest.fixture
def tiny_zimage_paths(registry, tmp_path, monkeypatch) -> None:
    """The tiny Z-Image folder and transformer file, and a tiny training adapter, for the ${...} in the fixtures."""
    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage"), registry, device="cpu", dtype="fp32")
    folder = Path(resolve_source(adapter.config, adapter.arch).path).resolve()
    single_file = adapter.arch.spec.tiny.single_file
    assistant = save_lora(random_lora(adapter.components(), {"transformer": ["attention.to_q"]}, scale=0.05),
                          tmp_path / "assistant.safetensors", arch="zimage")
    for name, value in (("TINY_ASSISTANT", assistant), ("TINY_ZIMAGE", folder), ("TINY_ZIMAGE_FILE", folder / single_file)):
        monkeypatch.setenv(name, str(value))


@pytest.mark.parametrize("name", sorted(UI_JOBS))
def test_ui_job_trains_saves_and_previews(name, registry, tiny_zimage_paths, tmp_path):
    images = image_folder(tmp_path)
    overrides = [*SMALL, f"config.process.0.datasets.0.folder_path={images}", f"config.process.0.training_folder={tmp_path / 'out'}"]
    assert run.main([str(FIXTURES / name), *[arg for item in overrides for arg in ("--set", item)]]) == 0
    folder = tmp_path / "out" / "my_first_lora_v1"
    arch = UI_JOBS[name]
    adapter = load_adapter(ModelConfig(name_or_path=f"tiny:{arch.partition(':')[0]}", arch=arch), registry, device="cpu")
    lora = load_lora(folder / "my_first_lora_v1.safetensors", adapter=adapter)
    assert lora.modules and {m.rank for m in lora.modules.values()} <= {32, 16}
    assert len(list((folder / "samples").glob("*_[0-9][0-9].png"))) == 20, "10 previews before and 10 after"


def test_generate_example_makes_its_images(tmp_path):
    overrides = ["config.process.0.device=cpu", "config.process.0.generate.width=32", "config.process.0.generate.height=32",
                 "config.process.0.generate.sample_steps=2", f"config.process.0.output_folder={tmp_path}"]
    assert run.main([str(FIXTURES / "generate_example.yaml"), *[arg for item in overrides for arg in ("--set", item)]]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 4
