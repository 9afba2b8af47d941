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


def _train_config(tmp_path: Path, images: Path, **process) -> Path:
    from toolkit.output import dump_yaml

    base = {"type": "sd_trainer", "device": "cpu", "training_folder": str(tmp_path / "out"), "trigger_word": "sks",
            "network": {"linear": 4}, "save": {"dtype": "fp32", "save_every": 100},
            "datasets": [{"folder_path": str(images), "resolution": [64]}],
            "train": {"steps": 2, "lr": 1e-3, "optimizer": "adamw"}, "model": {"name_or_path": "tiny:sd15", "arch": "sd15"}}
    for key, value in process.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    path = tmp_path / "train.yaml"
    path.write_text(dump_yaml({"job": "extension", "config": {"name": "feat", "process": [base]}}))
    return path


def test_masks_weights_and_preservation_train_on_the_tiny_model(tmp_path):
    from PIL import Image

    images = image_folder(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in images.glob("*.png"):
        Image.new("L", Image.open(path).size, 255).crop((0, 0, 48, 64)).resize(Image.open(path).size).save(masks / path.name)
    dataset = {"folder_path": str(images), "resolution": [64], "mask_path": str(masks), "mask_min_value": 0.1,
               "loss_multiplier": 2.0, "network_weight": 0.8}
    config = _train_config(tmp_path, images, datasets=[dataset],
                           train={"diff_output_preservation": True, "diff_output_preservation_class": "picture",
                                  "inverted_mask_prior": True})
    assert run.main([str(config)]) == 0
    assert (tmp_path / "out" / "feat" / "feat.safetensors").is_file()


def test_datasets_with_their_own_batch_size_train(tmp_path, capsys):
    images = image_folder(tmp_path)
    datasets = [{"folder_path": str(images), "resolution": [64]},
                {"folder_path": str(images), "resolution": [64], "batch_size": 3, "cache_latents": True}]
    config = _train_config(tmp_path, images, datasets=datasets, train={"batch_size": 2, "steps": 3})
    assert run.main([str(config), "--dry-run"]) == 0
    assert "(batch 2/3 by dataset, " in capsys.readouterr().out
    assert run.main([str(config)]) == 0
    assert (tmp_path / "out" / "feat" / "feat.safetensors").is_file()


def test_full_if_contains_trains_saves_resumes_and_loads_as_full_differences(registry, tmp_path):
    from safetensors import safe_open

    images = image_folder(tmp_path)
    network = {"linear": 4, "network_kwargs": {"full_if_contains": ["to_out"]}}
    config = _train_config(tmp_path, images, network=network, save={"save_every": 1}, train={"steps": 2, "lr": 1e-2})
    assert run.main([str(config)]) == 0
    file = tmp_path / "out" / "feat" / "feat.safetensors"
    with safe_open(str(file), "pt") as handle:
        keys = list(handle.keys())
        diffs = [handle.get_tensor(key) for key in keys if key.endswith(".diff")]
    assert diffs and all(float(diff.abs().max()) > 0 for diff in diffs), "the differences learned"
    assert not any("to_out" in key and ".lora_" in key for key in keys) and any(key.endswith(".lora_down.weight") for key in keys)
    assert run.main([str(config), "--set", "config.process.0.train.steps=3"]) == 0  # resumes from step 2
    assert "Resum" in (tmp_path / "out" / "feat" / "log.txt").read_text()
    adapter = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu")
    lora = load_lora(file, adapter=adapter)
    assert {module.kind for module in lora.modules.values()} == {"lora", "full"}


def test_merge_network_on_save_writes_the_base_plus_the_adapter(registry, tmp_path):
    import torch

    from toolkit.lora_io.keys import group_modules
    from toolkit.lora_io.model import delta_weight

    images = image_folder(tmp_path)
    config = _train_config(tmp_path, images, train={"merge_network_on_save": True, "merge_network_on_save_strength": 0.5},
                           save={"save_format": "diffusers"})
    assert run.main([str(config)]) == 0
    folder = tmp_path / "out" / "feat"
    merged = load_adapter(ModelConfig(name_or_path=str(folder / "feat"), arch="sd15"), registry, device="cpu", dtype="fp32")
    base = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu", dtype="fp32")
    state = torch.load(folder / "feat_000000002.state.pt", weights_only=True)["network"]
    modules = group_modules({key: value for key, value in state.items()})
    name, module = next((m.name, m) for m in modules.values() if m.component == "unet")
    expected = base.denoiser.get_submodule(name).weight + 0.5 * delta_weight(module)
    assert torch.allclose(merged.denoiser.get_submodule(name).weight, expected, atol=1e-3)
    assert not (folder / "feat.safetensors").exists(), "the merged model replaces the LoRA file"


def test_inference_lora_is_applied_when_generating(registry, tmp_path):
    import numpy as np
    from PIL import Image

    from toolkit.output import dump_yaml

    adapter = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu", dtype="fp32")
    lora = save_lora(random_lora(adapter.components(), {"unet": ["to_q", "to_v"]}, seed=4), tmp_path / "l.safetensors",
                     arch="sd15")

    def generate(name: str, model: dict, loras: list) -> np.ndarray:
        config = tmp_path / f"{name}.yaml"
        config.write_text(dump_yaml({"job": "generate", "config": {"name": name, "process": [{
            "type": "to_folder", "output_folder": str(tmp_path / name), "device": "cpu",
            "model": {"name_or_path": "tiny:sd15", "arch": "sd15", **model},
            "generate": {"prompts": ["a cat"], "width": 32, "height": 32, "sample_steps": 2, "seed": 3, "loras": loras}}]}}))
        assert run.main([str(config)]) == 0
        return np.asarray(Image.open(next((tmp_path / name).glob("*.png"))), dtype=np.float32)

    stacked = generate("stacked", {}, [{"path": str(lora)}])
    inferred = generate("inferred", {"inference_lora_path": str(lora)}, [])
    assert np.abs(stacked - inferred).max() == 0 and np.abs(stacked - generate("plain", {}, [])).max() > 1


def test_a_lora_trained_on_an_sdxl_unet_laid_out_otherwise_loads_back(registry, tmp_path):
    """SGM names follow the trained UNet's own layout (one layer per block here), so the file loads back and
    diffusers reads it onto the same layers."""
    from tests.lora_io.helpers import image, max_diff
    from tests.lora_io.test_other_tools import _easel_image, _tiny_sdxl_with_one_layer_per_block

    folder = _tiny_sdxl_with_one_layer_per_block(tmp_path / "small_xl")
    images = image_folder(tmp_path)
    config = _train_config(tmp_path, images, model={"name_or_path": str(folder), "arch": "sdxl"},
                           network={"linear": 4, "conv": 2}, train={"steps": 1, "lr": 5e-2})
    assert run.main([str(config)]) == 0
    path = tmp_path / "out" / "feat" / "feat.safetensors"

    def small():
        return load_adapter(ModelConfig(name_or_path=str(folder), arch="sdxl"), registry, device="cpu", dtype="fp32")

    adapter = small()
    assert load_lora(path, adapter=adapter).modules
    fresh = small()
    fresh.pipeline().load_lora_weights(str(path))
    assert max_diff(image(fresh), _easel_image(adapter, path)) <= 1.0
