"""Reference images (edit pairs, preview and generate references) are refused where the architecture takes none."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from toolkit.config.sample import SampleItem
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError, EaselError
from toolkit.models.base import GenerateRequest
from toolkit.models.pipeline_adapter import check_references
from toolkit.registry import ArchRef, ArchSpec, ReferenceImages

TRAIN = """job: extension
config:
  name: edit
  process:
    - type: lora_trainer
      datasets:
        - folder_path: {folder}
          control_path: {folder}
      model:
        name_or_path: tiny:sd15
        arch: sd15
"""

GENERATE = """job: generate
config:
  name: edit
  process:
    - type: to_folder
      output_folder: {folder}
      generate:
        prompts: [a cat]
        reference_images: [{folder}/a.png]
      model:
        name_or_path: tiny:sd15
        arch: sd15
"""


@pytest.mark.parametrize(("text", "line", "key"), [(TRAIN, 8, "datasets[0].control_path"), (GENERATE, 9, "generate.reference_images")])
def test_an_architecture_without_references_refuses_them_at_their_line(registry, tmp_path: Path, text: str, line: int,
                                                                      key: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text.format(folder=tmp_path), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_job_config(path, registry)
    message = str(caught.value)
    assert "takes no reference images" in message and key in message and f"line {line}" in message


def test_sample_items_take_ai_toolkits_ctrl_img_keys() -> None:
    assert SampleItem(prompt="p", ctrl_img="a.png").references() == ["a.png"]
    assert SampleItem(prompt="p", ctrl_img="a.png", ctrl_img_1="a.png", ctrl_img_2="b.png").references() == ["a.png", "b.png"]
    assert SampleItem(prompt="p").references() == []


def test_generation_checks_the_references_against_the_architecture() -> None:
    image = Image.new("RGB", (16, 16))
    request = GenerateRequest(prompt="p", width=16, height=16, steps=1, guidance_scale=1, seed=0, sampler="euler",
                              references=[image, image])
    plain = ArchRef(ArchSpec(name="plain", adapter="x:y"), "base")
    edit = ArchRef(ArchSpec(name="edit", adapter="x:y", references=ReferenceImages(count=1)), "base")
    with pytest.raises(EaselError, match="takes no reference images"):
        check_references(request, plain)
    with pytest.raises(EaselError, match="at most 1"):
        check_references(request, edit)
    request.references, request.init_image = [image], image
    with pytest.raises(EaselError, match="cannot be used together"):
        check_references(request, edit)
    request.init_image = None
    check_references(request, edit)


def test_missing_reference_files_are_named_at_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import run

    (tmp_path / "data").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "data" / "a.png")
    process = {"type": "lora_trainer", "datasets": [{"folder_path": str(tmp_path / "data"), "control_path": str(tmp_path / "nope")}],
               "model": {"name_or_path": "tiny:flux_kontext", "arch": "flux_kontext"},
               "sample": {"samples": [{"prompt": "p", "ctrl_img": str(tmp_path / "missing.png")}]}}
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"job": "extension", "config": {"name": "x", "process": [process]}}))
    assert run.main(["--dry-run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "control folder" in err and "nope" in err and "missing.png" in err
