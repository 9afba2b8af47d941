"""``job: evaluate`` end to end through run.py's main(): generation is faked (solid colours per variant),
the CLIP metrics (tiny random CLIP), reports and grid are real."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.eval import generation
from toolkit.sampling.grid import read_grid_metadata

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
COLOURS = {(): (128, 128, 128), ("red.safetensors",): (220, 20, 20), ("blue.safetensors", "red.safetensors"): (120, 20, 200)}


@pytest.fixture
def fake_generate(monkeypatch):
    calls = []

    def fake(model_cfg, loras, prompts, seeds, settings, **inputs):
        calls.append({"model": model_cfg.name_or_path, "loras": [(Path(l.path).name, l.weight) for l in loras], "prompts": list(prompts),
                      "seeds": list(seeds), "size": (settings.width, settings.height), "steps": settings.steps,
                      "sampler": settings.sampler, "guidance": settings.guidance_scale})
        colour = COLOURS[tuple(sorted(Path(l.path).name for l in loras))]
        return [Image.new("RGB", (settings.width, settings.height), colour) for _ in prompts for _ in seeds]

    released = []
    monkeypatch.setattr(generation, "generate_images", fake)
    monkeypatch.setattr(generation, "release_models", lambda: released.append(True))
    return calls, released


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "red.safetensors").write_bytes(b"fake")
    (tmp_path / "blue.safetensors").write_bytes(b"fake")
    refs = tmp_path / "red_style"
    refs.mkdir()
    for i, size in enumerate([(32, 32), (50, 40), (64, 64)]):
        Image.new("RGB", size, (220, 20, 20)).save(refs / f"{i}.png")
    config = tmp_path / "eval.yaml"
    config.write_text(f"""# python run.py eval.yaml
job: evaluate
config:
  name: styles
  process:
    - type: compare
      output_folder: {tmp_path / 'out' / '[name]'}
      device: cpu
      model:
        name_or_path: tiny:sd15
        arch: sd15
      variants:
        - name: base
        - name: red
          loras: [{{path: {tmp_path / 'red.safetensors'}, weight: 1.0}}]
        - name: red+blue 0.5/0.5
          loras:
            - {{path: {tmp_path / 'red.safetensors'}, weight: 0.5}}
            - {{path: {tmp_path / 'blue.safetensors'}, weight: 0.5}}
      prompts: [a red square, a grey square, a purple square]
      images_per_prompt: 2
      seed: 10
      generate:
        width: 40
        height: 24
      reference_images: {refs}
      clip_model: CLIP
      clip_score_scale: cosine
      grid_cell: 32
""")
    return tmp_path, config


def test_evaluate_writes_results_and_grid(setup, tiny_clip, fake_generate, run_main):
    tmp_path, config = setup
    calls, released = fake_generate
    assert run_main(config, "--set", f"config.process.0.clip_model={tiny_clip}") == 0
    out = tmp_path / "out" / "styles"
    assert [c["loras"] for c in calls] == [[], [("red.safetensors", 1.0)], [("red.safetensors", 0.5), ("blue.safetensors", 0.5)]]
    assert calls[0] | {"loras": None} == {"model": "tiny:sd15", "loras": None, "prompts": ["a red square", "a grey square", "a purple square"],
                                          "seeds": [10, 11], "size": (40, 24), "steps": 25, "sampler": "euler_a", "guidance": 7.5}
    assert released == [True]
    assert sorted(p.name for p in (out / "images" / "02_red_blue_0.5_0.5").iterdir()) == ["00_10.png", "00_11.png", "01_10.png", "01_11.png", "02_10.png", "02_11.png"]
    assert (out / "config.yaml").is_file() and (out / "log.txt").is_file()

    data = json.loads((out / "results.json").read_text())
    variants = {v["name"]: v for v in data["variants"]}
    assert list(variants) == ["base", "red", "red+blue 0.5/0.5"] and data["seeds"] == [10, 11]
    for v in variants.values():
        assert len(v["images"]) == 6
        assert v["clip_score"] == pytest.approx(np.mean([i["clip_score"] for i in v["images"]]))
        assert all(-1 <= i["clip_score"] <= 1 for i in v["images"])
    # the red variant's images are the reference images' pixels after CLIP's resize: similarity 1
    assert variants["red"]["style_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert variants["base"]["style_similarity"] < 1 - 1e-4 and variants["red+blue 0.5/0.5"]["style_similarity"] < 1 - 1e-4
    # within a variant, images of one colour embed identically, so each prompt's score is the same for both seeds
    red_scores = [i["clip_score"] for i in variants["red"]["images"]]
    assert red_scores[0] == pytest.approx(red_scores[1]) and red_scores[2] == pytest.approx(red_scores[3])

    table = (out / "results.md").read_text()
    red_row = next(line for line in table.splitlines() if line.startswith("| red |"))
    assert red_row.endswith("| **1.0000** |")
    best_clip = max(v["clip_score"] for v in variants.values())
    assert sum(line.count(f"**{best_clip:.4f}**") for line in table.splitlines()) == 1
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [r["variant"] for r in rows] == ["base", "red", "red+blue 0.5/0.5"] and rows[1]["loras"].endswith("red.safetensors:1")

    grid = Image.open(out / "grid.png")
    assert grid.height > 3 * 32 and grid.width > 3 * (2 * 32)
    assert read_grid_metadata(out / "grid.png") == {"rows": ["base", "red", "red+blue 0.5/0.5"],
                                                    "columns": ["a red square", "a grey square", "a purple square"], "seeds": [10, 11]}
    pixels = np.asarray(grid).reshape(-1, 3)
    for colour in COLOURS.values():
        assert (pixels == colour).all(axis=1).any()


def test_missing_lora_stops_before_generating(setup, fake_generate, run_main, messages):
    tmp_path, config = setup
    (tmp_path / "blue.safetensors").unlink()
    assert run_main(config) == 2
    assert "blue.safetensors" in "\n".join(messages)
    assert fake_generate[0] == []


def test_unusable_clip_model_stops_before_generating(setup, tiny_blip, fake_generate, run_main, messages):
    _, config = setup
    assert run_main(config, "--set", f"config.process.0.clip_model={tiny_blip}") == 2
    assert "is a 'blip' model, not CLIP" in "\n".join(messages)
    assert run_main(config, "--set", "config.process.0.clip_model=/no/such/clip") == 2
    assert "cannot load the CLIP model '/no/such/clip'" in "\n".join(messages)
    assert fake_generate[0] == []


def test_example_dry_run_plans_every_variant(run_main, capfd):
    assert run_main("--dry-run", EXAMPLES / "evaluate_styles.yaml") == 0
    printed = capfd.readouterr().out
    assert "4 variants x 5 prompts x 2 seeds" in printed
    assert "watercolor_anime_0.6_0.4: output/watercolor_lora/watercolor_lora.safetensors @ 0.6, output/anime_lora/anime_lora.safetensors @ 0.4" in printed


def test_seeds_and_images_per_prompt_conflict(setup, run_main, messages):
    _, config = setup
    assert run_main(config, "--set", "config.process.0.seeds=[1, 2]") == 2
    assert "set either seeds or images_per_prompt" in "\n".join(messages)


def test_evaluate_with_real_generation(tmp_path, tiny_clip, run_main, registry):
    """No fakes: tiny SD 1.5, a random LoRA file and the tiny CLIP; the LoRA variant's images differ from the base's."""
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter
    from toolkit.testing.tiny import save_random_lora

    adapter = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu")
    lora = save_random_lora(adapter.pipeline(), tmp_path / "style.safetensors", adapter.lora_targets(False), seed=5)
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (64, 64), (200, 120, 80)).save(refs / "0.png")
    config = tmp_path / "eval.yaml"
    config.write_text(f"""job: evaluate
config:
  name: real
  process:
    - type: compare
      output_folder: {tmp_path / 'out'}
      device: cpu
      model: {{name_or_path: "tiny:sd15", arch: sd15}}
      variants:
        - name: base
        - name: style
          loras: [{{path: {lora}, weight: 1.0}}]
      prompts: [a red house, a boat]
      seeds: [1]
      generate: {{sampler: euler, sample_steps: 2, guidance_scale: 1.0, width: 64, height: 64}}
      reference_images: {refs}
      clip_model: {tiny_clip}
""")
    assert run_main(config) == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["base", "style"]
    base, style = (np.stack([np.asarray(Image.open(p), dtype=np.int16) for p in sorted((tmp_path / "out" / "images" / d).iterdir())])
                   for d in ("00_base", "01_style"))
    assert base.shape == style.shape == (2, 64, 64, 3) and np.abs(base - style).max() > 10
    assert all(np.isfinite(v["clip_score"]) and np.isfinite(v["style_similarity"]) for v in data["variants"])
    assert (tmp_path / "out" / "grid.png").is_file() and (tmp_path / "out" / "results.md").is_file()


@pytest.mark.slow
def test_example_config_runs_on_tiny_models(tmp_path, tiny_clip, run_main, registry):
    """evaluate_styles.yaml itself (base, two single LoRAs, a weighted pair; 5 prompts x 2 seeds), pointed at tiny SD 1.5,
    two random LoRAs, two reference folders and the tiny CLIP with --set; the scores are checked against CLIP by hand."""
    from toolkit.config.blocks import ModelConfig
    from toolkit.eval.clip import ClipEmbedder
    from toolkit.models.loading import load_adapter
    from toolkit.testing.tiny import save_random_lora
    import torch

    adapter = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu")
    loras = {name: save_random_lora(adapter.pipeline(), tmp_path / f"{name}.safetensors", adapter.lora_targets(False), seed=seed)
             for seed, name in enumerate(["anime", "watercolor"], start=3)}
    refs = {}
    for name, colour in [("anime", (240, 200, 210)), ("watercolor", (90, 140, 200))]:
        refs[name] = tmp_path / f"refs_{name}"
        refs[name].mkdir()
        for i in range(2):
            Image.new("RGB", (48 + 16 * i, 48), tuple(c - 40 * i for c in colour)).save(refs[name] / f"{i}.png")
    overrides = {"output_folder": tmp_path / "out", "device": "cpu", "model.name_or_path": "tiny:sd15", "model.dtype": "fp32",
                 "variants.1.loras.0.path": loras["anime"], "variants.1.reference_images": refs["anime"],
                 "variants.2.loras.0.path": loras["watercolor"], "variants.2.reference_images": refs["watercolor"],
                 "variants.3.loras.0.path": loras["watercolor"], "variants.3.loras.1.path": loras["anime"],
                 "variants.3.reference_images": refs["watercolor"], "generate.width": 64, "generate.height": 64,
                 "generate.sample_steps": 2, "clip_model": tiny_clip, "grid_cell": 32}
    argv = [arg for key, value in overrides.items() for arg in ("--set", f"config.process.0.{key}={value}")]
    assert run_main(EXAMPLES / "evaluate_styles.yaml", *argv) == 0

    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    names = ["base", "anime", "watercolor", "watercolor_anime_0.6_0.4"]
    assert [v["name"] for v in data["variants"]] == names and data["seeds"] == [0, 1] and len(data["prompts"]) == 5
    assert [[(Path(l["path"]).stem, l["weight"]) for l in v["loras"]] for v in data["variants"]] == \
        [[], [("anime", 1.0)], [("watercolor", 1.0)], [("watercolor", 0.6), ("anime", 0.4)]]
    assert data["variants"][0]["style_similarity"] is None and all(v["style_similarity"] is not None for v in data["variants"][1:])

    clip = ClipEmbedder(str(tiny_clip), device=torch.device("cpu"), dtype=torch.float32)
    texts = clip.texts(data["prompts"])
    for variant in data["variants"]:
        assert len(variant["images"]) == 10
        embeds = clip.images([Image.open(out / image["file"]) for image in variant["images"]])
        # CLIP score (percent): 100 * max(cos, 0) of each image with its own prompt, by hand
        cosines = [float(np.dot(e, texts[image["prompt_index"]])) for e, image in zip(embeds, variant["images"])]
        assert [i["clip_score"] for i in variant["images"]] == pytest.approx([100 * max(c, 0.0) for c in cosines], abs=1e-3)
        assert variant["clip_score"] == pytest.approx(np.mean([i["clip_score"] for i in variant["images"]]))
        if variant["reference_images"]:
            ref_embeds = clip.images([Image.open(p) for p in sorted(Path(variant["reference_images"]).iterdir())])
            assert variant["style_similarity"] == pytest.approx(float((embeds @ ref_embeds.T).mean()), abs=1e-4)

    table = (out / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| Model")]
    assert [row.split(" | ")[0][2:] for row in rows] == names
    shown = [f"{v['clip_score']:.2f}" for v in data["variants"]]
    best = max(shown, key=float)
    if shown.count(best) == 1:
        assert f"**{best}**" in rows[shown.index(best)]
    else:  # the tiny CLIP often scores every image 0.00: nothing is bold, and the report says why
        assert not any(f"**{best}**" in row for row in rows)
        if len(set(shown)) == 1:
            assert f"**Degenerate scores:** every variant scores {best} on CLIP Score" in "\n".join(table)
    assert len(list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))) == 4
    grid = Image.open(out / "grid.png")
    assert grid.height >= 4 * 32 and grid.width >= 5 * 2 * 32
