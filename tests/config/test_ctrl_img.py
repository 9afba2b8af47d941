"""One rule for a preview's ``ctrl_img``: an architecture with reference images (edit models) reads ``ctrl_img`` /
``ctrl_img_1..3`` as its references; any other reads ``ctrl_img`` as the control image of
``sample.controlnets[ctrl_idx]``; a ``ctrl_img`` with neither meaning is a config error at its line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from toolkit.config.sample import SampleConfig, SampleItem
from toolkit.config.control import ControlNetConfig
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError
from toolkit.registry import ArchRef, ReferenceImages
from toolkit.train.sampling import preview_requests

TRAIN = """job: extension
config:
  name: previews
  process:
    - type: lora_trainer
      datasets:
        - folder_path: {folder}
      model:
        name_or_path: tiny:{arch}
        arch: {arch}
      sample:
        samples:
          - prompt: a cat
            {key}: {folder}/photo.png
"""


def _photo(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 80, 40)).save(path)
    return path


def test_an_edit_model_reads_ctrl_img_as_its_reference(registry: Any, tmp_path: Path) -> None:
    photo = _photo(tmp_path / "photo.png", (48, 32))
    sample = SampleConfig(width=64, height=64, samples=[SampleItem(prompt="make it warm", ctrl_img=str(photo))])
    (preview,) = preview_requests(sample, registry.arch("flux_kontext"))
    assert [image.size for image in preview.request.references] == [(48, 32)]
    assert preview.request.controls == ()


def test_any_other_architecture_reads_ctrl_img_as_the_control_image_of_ctrl_idx(registry: Any, tmp_path: Path) -> None:
    photo = _photo(tmp_path / "photo.png", (64, 64))
    sample = SampleConfig(width=64, height=64, controlnets=[ControlNetConfig(path="a/canny", preprocess="canny")],
                          samples=[SampleItem(prompt="a cat", ctrl_img=str(photo))])
    (preview,) = preview_requests(sample, registry.arch("sd15"))
    assert [c.image_key.split("|")[0] for c in preview.request.controls] == [str(photo)]
    assert preview.request.references == []


def test_with_both_ctrl_img_is_a_reference_and_the_controlnets_read_their_own_image(registry: Any, tmp_path: Path) -> None:
    photo, fixed = _photo(tmp_path / "photo.png", (64, 64)), _photo(tmp_path / "fixed.png", (64, 64))
    sd15 = registry.arch("sd15")
    both = ArchRef(replace(sd15.spec, references=ReferenceImages(count=2)), sd15.variant)
    sample = SampleConfig(width=64, height=64, controlnets=[ControlNetConfig(path="a/canny", image=str(fixed))],
                          samples=[SampleItem(prompt="a cat", ctrl_img=str(photo), ctrl_img_2=str(fixed))])
    (preview,) = preview_requests(sample, both)
    assert [c.image_key.split("|")[0] for c in preview.request.controls] == [str(fixed)]
    assert len(preview.request.references) == 2
    assert [where for where, _ in sample.control_problems(references=True)] == []
    unread = SampleConfig(controlnets=[ControlNetConfig(path="a/canny")], samples=[SampleItem(prompt="p", ctrl_img="x.png")])
    assert [where for where, _ in unread.control_problems(references=False)] == []
    assert [where for where, _ in unread.control_problems(references=True)] == [("controlnets", 0)]


@pytest.mark.parametrize(("arch", "key", "fragment"), [
    ("sd15", "ctrl_img", "has ctrl_img but sample.controlnets has no entry 0"),
    ("sd15", "ctrl_img_2", "takes no reference images"),
])
def test_a_ctrl_img_without_a_meaning_is_an_error_at_its_line(registry: Any, tmp_path: Path, arch: str, key: str,
                                                              fragment: str) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(TRAIN.format(folder=tmp_path, arch=arch, key=key), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_job_config(config, registry)
    message = str(caught.value)
    assert fragment in message and f"sample.samples[0].{key}" in message and "line 14" in message


def test_an_edit_models_ctrl_img_needs_no_controlnet(registry: Any, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(TRAIN.format(folder=tmp_path, arch="flux_kontext", key="ctrl_img"), encoding="utf-8")
    load_job_config(config, registry)
