"""Training previews on the structure of a fixed image: ``samples[].ctrl_img`` (ai-toolkit's key) read by
``sample.controlnets[ctrl_idx]``, its mistakes as config errors with their line, and a real tiny training run whose
previews are the ControlNet images the generate code makes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

import run
from tests.control.conftest import shapes
from toolkit.config.sample import SampleConfig, SampleItem
from toolkit.config.control import ControlNetConfig
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError
from toolkit.train.sampling import preview_requests


def test_ctrl_img_feeds_the_controlnet_ctrl_idx_names_and_sets_the_shape(registry: Any, tmp_path: Path) -> None:
    wide, fixed = tmp_path / "wide.png", tmp_path / "fixed.png"
    shapes((128, 64)).save(wide)
    shapes((128, 64)).transpose(0).save(fixed)
    sample = SampleConfig(width=64, height=64, prompts=["plain"], controlnets=[
        ControlNetConfig(path="a/canny", image=str(fixed), preprocess="canny"), ControlNetConfig(path="b/tile", image=str(fixed))],
        samples=[SampleItem(prompt="first", ctrl_img=str(wide)), SampleItem(prompt="second", ctrl_img=str(wide), ctrl_idx=1)])
    plain, first, second = (preview.request for preview in preview_requests(sample, registry.arch("zimage:turbo")))
    assert [c.source.path for c in first.controls] == ["a/canny", "b/tile"]
    assert [c.image_key.split("|")[0] for c in first.controls] == [str(wide), str(fixed)]
    assert [c.image_key.split("|")[0] for c in second.controls] == [str(fixed), str(wide)]
    assert [c.image_key.split("|")[0] for c in plain.controls] == [str(fixed), str(fixed)]
    assert (first.width, first.height) == (96, 48), "2:1 at 64x64 pixels, sides of 16"
    assert first.controls[0].image.size == (96, 48) and first.controls[0].kind == "canny"


@pytest.mark.parametrize("sample,fragment", [
    ({"samples": [{"prompt": "a cat", "ctrl_img": "x.png"}]}, "has ctrl_img but sample.controlnets has no entry 0"),
    ({"prompts": ["a cat"], "controlnets": [{"path": "a/b"}]},
     "sample.controlnets[0] has no image and prompt 0 ('a cat') gives it no ctrl_img"),
])
def test_control_image_mistakes_are_config_errors(sample: dict, fragment: str, tmp_path: Path, registry: Any) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"job": "extension", "config": {"name": "n", "process": [{
        "type": "lora_trainer", "datasets": [{"folder_path": str(tmp_path)}], "model": {"name_or_path": "x/y", "arch": "sd15"},
        "sample": sample}]}}))
    with pytest.raises(ConfigError) as caught:
        load_job_config(config, registry)
    assert fragment in str(caught.value) and "config.process[0].sample" in str(caught.value)


def _dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for index, colour in enumerate([(200, 60, 40), (40, 160, 80)]):
        Image.new("RGB", (64, 64), colour).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text("sks square")
    return folder


@pytest.mark.slow
def test_a_training_run_previews_on_the_structure_of_a_fixed_image(base: Callable, controlnet: Callable, adapters: Any,
                                                                    tmp_path: Path, capsys: Any) -> None:
    from toolkit.control.inputs import controls_for
    from toolkit.models.base import GenerateRequest

    photo = tmp_path / "photo.png"
    shapes((64, 64)).save(photo)
    control = {"path": str(controlnet("sd15")), "preprocess": "canny"}
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"job": "extension", "config": {"name": "cn", "process": [{
        "type": "lora_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu",
        "network": {"linear": 4, "linear_alpha": 4}, "save": {"dtype": "fp32"},
        "datasets": [{"folder_path": str(_dataset(tmp_path / "data")), "resolution": [64]}],
        "train": {"steps": 1, "batch_size": 1, "lr": 1e-4, "dtype": "fp32"},
        "model": {"name_or_path": str(base("sd15")), "arch": "sd15"},
        "sample": {"sample_every": 100, "width": 64, "height": 64, "sample_steps": 2, "guidance_scale": 1, "seed": 5,
                   "controlnets": [control], "samples": [{"prompt": "sks square", "ctrl_img": str(photo)}]}}]}}))
    assert run.main(["--dry-run", str(config)]) == 0
    assert f"controlnet 0: {controlnet('sd15')} (scale 1, preprocess canny) reading the ctrl_img of each prompt" in capsys.readouterr().out
    assert run.main([str(config)]) == 0
    first = tmp_path / "out" / "cn" / "samples" / "000000000_00.png"
    adapter = adapters["sd15"]
    controls, size = controls_for([ControlNetConfig(**control)], [str(photo)], (64, 64), adapter.arch.spec)
    request = GenerateRequest(prompt="sks square", width=size[0], height=size[1], steps=2, guidance_scale=1, seed=5,
                              sampler="euler_a", controls=controls)
    expected = np.asarray(adapter.generate([request])[0], dtype=np.float32)
    assert np.abs(np.asarray(Image.open(first), dtype=np.float32) - expected).max() <= 1, "the step-0 preview is the ControlNet image"


def test_a_ctrl_img_of_another_shape_stops_the_dry_run(tmp_path: Path, capfd: Any) -> None:
    square, wide = tmp_path / "square.png", tmp_path / "wide.png"
    shapes((64, 64)).save(square)
    shapes((128, 64)).save(wide)
    config = tmp_path / "train.yaml"
    config.write_text(f"""job: extension
config:
  name: n
  process:
    - type: lora_trainer
      datasets: [{{folder_path: {_dataset(tmp_path / 'data')}}}]
      model: {{name_or_path: x/y, arch: sd15}}
      sample:
        controlnets:
          - {{path: a/canny, image: {square}}}
          - {{path: b/depth}}
        samples:
          - prompt: a cat
            ctrl_img: {wide}
            ctrl_idx: 1
""")
    assert run.main(["--dry-run", str(config)]) == 2
    err = capfd.readouterr().err
    assert "line 14," in err and "the control image 'wide.png' is 128x64 (aspect 2.00) but 'square.png'" in err
