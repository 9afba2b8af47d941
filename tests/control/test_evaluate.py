"""The evaluate job's "structure kept": img2img and ControlNet variants of tiny SD 1.5 generated from the same inputs,
each output's edge agreement with its input measured next to the CLIP metrics (no fakes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

import run
from tests.control.conftest import shapes
from tests.tiny_transformers import tiny_clip  # noqa: F401
from toolkit.control.edges import edge_agreement
from toolkit.data.images import load_image
from toolkit.sampling.grid import read_grid_metadata


@pytest.mark.slow
def test_structure_kept_is_measured_for_img2img_and_controlnet_variants(base: Callable, controlnet: Callable, tiny_clip: Path,
                                                                         tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shapes((64, 64)).save(inputs / "house.png")
    shapes((192, 64)).save(inputs / "wide.png")
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({"job": "evaluate", "config": {"name": "structure", "process": [{
        "type": "compare", "output_folder": str(tmp_path / "out"), "device": "cpu",
        "model": {"name_or_path": str(base("sd15")), "arch": "sd15"}, "init_images": str(inputs), "strength": 1.0,
        "variants": [{"name": "light", "strength": 0.2}, {"name": "heavy"},
                     {"name": "heavy+canny", "controlnets": [{"path": str(controlnet("sd15")), "preprocess": "canny"}]}],
        "prompts": ["a painting"], "seeds": [1, 2], "clip_model": str(tiny_clip), "grid_cell": 32,
        "generate": {"sampler": "euler", "sample_steps": 4, "guidance_scale": 1.0, "width": 64, "height": 64}}]}}))
    assert run.main([str(config)]) == 0
    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    light, heavy, canny = data["variants"]
    for variant in data["variants"]:
        assert [Path(image["input_image"]).name for image in variant["images"]] == ["house.png", "house.png", "wide.png", "wide.png"]
        for image in variant["images"]:
            made = load_image(out / image["file"])
            assert image["structure"] == pytest.approx(edge_agreement(load_image(Path(image["input_image"])), made))
        assert 0 <= variant["structure"] <= 1
    assert light["images"][2]["file"] == "images/00_light/00_wide_1.png" and load_image(out / light["images"][2]["file"]).size == (128, 64)
    assert light["structure"] > heavy["structure"] + 0.1, "less noise keeps more of the input's edges"
    assert canny["structure"] != heavy["structure"], "the ControlNet changes the outputs"
    table = (out / "results.md").read_text()
    assert "| Model | CLIP Score | Style Similarity | Structure Kept |" in table and "Structure kept: edge agreement" in table
    labels = read_grid_metadata(out / "grid.png") or {}
    assert labels["rows"] == ["light", "heavy", "heavy+canny"] and [Path(p).name for p in labels["inputs"]] == ["house.png", "wide.png"]
