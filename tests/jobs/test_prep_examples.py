"""The example configs of the dataset, caption, evaluate and synthetic-data recipes validate with the real registry."""

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.config.blocks import DatasetConfig
from toolkit.config.job import load_job_config
from toolkit.data.scan import scan_dataset
from toolkit.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
OWN = {
    "dataset_prep.yaml": ("dataset", ["filter", "dedupe", "resize", "tag"]),
    "dataset_captions.yaml": ("dataset", ["resize", "tag", "convert_captions"]),
    "caption_blip.yaml": ("caption", ["image_to_text"]),
    "caption_blip2.yaml": ("caption", ["image_to_text"]),
    "caption_florence2.yaml": ("caption", ["image_to_text"]),
    "evaluate_styles.yaml": ("evaluate", ["compare"]),
    "synthetic_generate.yaml": ("generate", ["to_folder"]),
    "z_image_turbo_lora.yaml": ("extension", ["lora_trainer"]),
}


@pytest.fixture(scope="module")
def registry():
    return Registry.discover(("jobs",), ROOT / "extensions")


@pytest.mark.parametrize("name", sorted(OWN))
def test_example_validates(registry, name):
    path = EXAMPLES / name
    assert path.read_text().splitlines()[0] == f"# python run.py config/examples/{name}"
    loaded = load_job_config(path, registry)
    job, types = OWN[name]
    assert loaded.spec.name == job
    assert [p.type for p in loaded.processes] == types
    assert loaded.ignored == []


def test_synthetic_recipe_generates_into_the_folder_training_reads(registry, tmp_path):
    generate = load_job_config(EXAMPLES / "synthetic_generate.yaml", registry).processes[0]
    train = load_job_config(EXAMPLES / "z_image_turbo_lora.yaml", registry).processes[0]
    assert generate.generate.prompt_file is True
    assert [d.folder_path for d in train.datasets] == [generate.output_folder]
    assert train.datasets[0].caption_ext == "txt"
    assert train.model.name_or_path == generate.model.name_or_path and train.model.arch == generate.model.arch
    # the layout a generate job with prompt_file writes: an image and its prompt beside it
    folder = tmp_path / "synthetic"
    folder.mkdir()
    from PIL import Image
    for i, prompt in enumerate(generate.generate.prompts[:3]):
        Image.new("RGB", (16, 16)).save(folder / f"{i:05d}.png")
        (folder / f"{i:05d}.txt").write_text(prompt)
    scan = scan_dataset(DatasetConfig(**{**train.datasets[0].model_dump(), "folder_path": str(folder)}))
    assert len(scan.images) == 3 and scan.captions == 3


def test_dry_runs_import_no_torch():
    code = ("import sys, run; codes = [run.main(['--dry-run', f'config/examples/{n}']) for n in "
            "('dataset_prep.yaml', 'caption_blip.yaml', 'evaluate_styles.yaml')]; "
            "assert codes == [0, 0, 0], codes; "
            "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
