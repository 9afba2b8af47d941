"""The dry run reports the data pipeline without loading torch; config checks around caching."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.data.helpers import dataset, write_image
from toolkit.config.train import LoraTrainerConfig

ROOT = Path(__file__).resolve().parents[2]


def _config(folder: Path, **train: object) -> str:
    extra = "".join(f"\n      {key}: {str(value).lower() if isinstance(value, bool) else value}" for key, value in train.items())
    return textwrap.dedent(f"""\
        job: extension
        config:
          name: dry
          process:
            - type: lora_trainer
              trigger_word: ohwx
              model: {{name_or_path: tiny:sdxl, arch: sdxl}}
              datasets:
                - folder_path: {folder}
                  resolution: [64, 128]
                  cache_latents_to_disk: true
              train:
                batch_size: 2
                gradient_accumulation: 1
        """) + extra.replace("\n      ", "\n        ")


def test_dry_run_prints_the_dataset_report_without_torch(tmp_path):
    folder = tmp_path / "images"
    for i in range(5):
        write_image(folder / f"a{i}.png", size=(128, 128), caption="a thing")
    (folder / "empty.jpg").write_bytes(b"")
    config = tmp_path / "job.yaml"
    config.write_text(_config(folder))
    code = ("import sys, run; code = run.main(['--dry-run', sys.argv[1]]); "
            "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"- {folder}: 5 images" in out
    assert "skipped 1: empty file 1 (empty.jpg)" in out
    assert "buckets @64: 64x64 x5; @128: 128x128 x5" in out
    assert "steps per epoch: 6 (batch 2" in out
    assert "training: 1000 steps (6 per epoch)" in out
    assert "NO TORCH" in out


def test_dry_run_of_a_missing_folder_is_a_user_error(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(_config(tmp_path / "nowhere"))
    result = subprocess.run([sys.executable, "run.py", "--dry-run", str(config)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "does not exist" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_dry_run_of_an_empty_dataset_names_its_yaml_line(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"")
    config = tmp_path / "job.yaml"
    config.write_text(_config(folder))
    result = subprocess.run([sys.executable, "run.py", "--dry-run", str(config)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    line = next(number for number, text in enumerate(config.read_text().splitlines(), 1) if "folder_path" in text)
    assert re.search(rf"line {line}, col \d+: config\.process\[0\]\.datasets\[0\]\.folder_path: dataset '{re.escape(str(folder))}' "
                     r"has no usable images\. Dropped: empty file 1 \(broken\.png\)\.", output), output
    assert "Fix or replace those files, or add usable images." in output


def test_random_crop_with_latent_cache_is_refused():
    with pytest.raises(ValidationError, match="random_crop cannot be used with cache_latents"):
        dataset("x", random_crop=True, cache_latents_to_disk=True)
    assert dataset("x", random_crop=True).random_crop


def _checked(datasets: list[dict], **train: object) -> list[tuple]:
    from toolkit.registry import Registry

    registry = Registry.discover(("jobs",), ROOT / "extensions")
    config = LoraTrainerConfig(type="lora_trainer", model={"name_or_path": "x", "arch": "sdxl"}, datasets=datasets,
                               train=train)
    return config.check(registry)


def test_text_cache_refuses_random_token_rules_in_config_check():
    problems = _checked([{"folder_path": "a", "caption_dropout_rate": 0.1}, {"folder_path": "b", "shuffle_tokens": True},
                         {"folder_path": "c", "token_dropout_rate": 0.2}], cache_text_embeddings=True)
    assert [path for path, _ in problems] == [("datasets", 1, "shuffle_tokens"), ("datasets", 2, "token_dropout_rate")]
    assert "cannot cache" in problems[0][1]
    assert _checked([{"folder_path": "b", "shuffle_tokens": True}]) == []


def test_cache_dir_under_the_run_folder_via_name(tmp_path, capsys):
    import run

    folder = tmp_path / "images"
    write_image(folder / "a.png", size=(64, 64), caption="a thing")
    config = tmp_path / "job.yaml"
    config.write_text(_config(folder).replace("cache_latents_to_disk: true",
                                              f"cache_latents_to_disk: true\n          cache_dir: {tmp_path}/runs/[name]/cache"))
    assert run.main(["--dry-run", str(config)]) == 0
    assert f"latents: cached on disk in {tmp_path / 'runs' / 'dry' / 'cache' / 'latents'}" in capsys.readouterr().out
