"""Hostile dataset files, trained on the tiny Z-Image model through the real scan and loader.

Before: a self-referencing symbolic link aborted the run (RuntimeError, exit 1); a 20000x40 image got a
8192x32 bucket, 512 latent patches wide, and the run crashed mid-training with an IndexError in the rope
embedding (exit 1); a caption with bad UTF-8 was read with U+FFFD and no word; and ``folder_path``
pointing at a metadata.jsonl failed with "folder does not exist".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import run
from toolkit.testing.demo import make


def hostile_folder(folder: Path) -> Path:
    make(folder, 3)
    os.symlink("loop.png", folder / "loop.png")  # points at itself
    os.symlink("ring_b.png", folder / "ring_a.png")
    os.symlink("ring_a.png", folder / "ring_b.png")
    os.symlink(folder / "deleted.png", folder / "gone.png")
    Image.new("RGB", (20000, 40), (230, 120, 80)).save(folder / "wide.png")
    (folder / "wide.txt").write_text("a very wide painting")
    Image.new("RGB", (20000, 10), (230, 120, 80)).save(folder / "thin.png")
    (folder / "000_flower.txt").write_bytes(b"a painting \xff\xfe of a flower")
    return folder


def listed_folder(folder: Path) -> Path:
    """Three images; a metadata.jsonl lists two of them (folder_path points at it: the third is not read)."""
    make(folder, 3, seed=1)
    for caption in folder.glob("*.txt"):
        caption.unlink()
    rows = [{"file_name": "000_flower.png", "text": "listed one"}, {"file_name": "001_house.png", "text": "listed two"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "metadata.jsonl"


def config(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.yaml"
    path.write_text(f"""
job: extension
config:
  name: hostile
  process:
    - type: lora_trainer
      training_folder: {tmp_path / 'output'}
      device: cpu
      network: {{type: lora, linear: 4, linear_alpha: 4}}
      save: {{dtype: fp32}}
      datasets:
        - folder_path: {hostile_folder(tmp_path / 'hostile')}
          resolution: [512]
        - folder_path: {listed_folder(tmp_path / 'listed')}
          resolution: [64]
          cache_latents_to_disk: true
      train: {{steps: 2, batch_size: 1, dtype: fp32, gradient_checkpointing: false}}
      model: {{name_or_path: "tiny:zimage", arch: "zimage:turbo"}}
""")
    return path


@pytest.mark.slow
def test_hostile_files_are_skipped_or_cropped_reported_and_the_run_trains(tmp_path: Path, capsys) -> None:
    path = config(tmp_path)
    assert run.main(["--dry-run", str(path)]) == 0
    captured = capsys.readouterr()
    hostile, listed = tmp_path / "hostile", tmp_path / "listed"
    out = captured.out
    assert f"- {hostile}: 4 images" in out
    assert "broken symbolic link 1 (gone.png)" in out and "symbolic link loop 3 (loop.png, ring_a.png, ring_b.png)" in out
    assert "smaller than 16px on a side 1 (thin.png)" in out
    assert "caption not valid UTF-8 (read with U+FFFD) 1 (000_flower.txt at byte 11)" in out
    assert "cropped to the maximum aspect ratio 4:1 1 (wide.png (20000x40))" in out and "128x32 x1" in out
    assert f"{hostile / '000_flower.txt'} is not valid UTF-8 (first bad byte at offset 11)" in captured.err
    assert f"- {listed}: 2 images" in out and "2 from metadata" in out
    assert f"latents: cached on disk in {listed / '_latent_cache' / 'latents'}" in out

    assert run.main([str(path)]) == 0, capsys.readouterr().err[-3000:]
    assert (tmp_path / "output" / "hostile" / "hostile.safetensors").is_file()
    assert len(list((listed / "_latent_cache" / "latents").glob("*.safetensors"))) == 2
