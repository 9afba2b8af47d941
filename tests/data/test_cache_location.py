"""Where disk caches go: ``<dataset>/_latent_cache`` by default (as in ai-toolkit), the run folder's ``cache/`` when
the dataset folder cannot be written, ``cache_dir`` when set; the place is named in the log.

Tests run as root, and root writes into a folder chmod'ed read-only, so a chmod proves nothing here. Two honest
ways instead: the probe write (the part of ``can_write`` that root passes) is replaced for the dataset folder,
and, where the machine allows it (``unshare -m``: root in a private mount namespace), the dataset folder is
bind-mounted read-only for real and a training data pipeline runs in it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.data.helpers import FakeAdapter, dataset, write_image
from toolkit import output
from toolkit.data.loader import TrainData


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        write_image(root / f"img{i}.png", size=(64, 64), color=(60 * i, 80, 90), caption=f"thing {i}")
    return root


def make(folder: Path, fallback: Path | None, **fields: object) -> TrainData:
    return TrainData([dataset(folder, resolution=[64], cache_latents_to_disk=True, **fields)], trigger_word=None,
                     batch_size=1, seed=0, bucket_divisibility=16, fallback_cache=fallback)


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_writable_dataset_keeps_the_cache_beside_its_images(folder: Path, tmp_path: Path) -> None:
    data = make(folder, tmp_path / "run" / "cache")
    data.prepare(FakeAdapter(), cache_text=True)
    assert len(list((folder / "_latent_cache" / "latents").glob("*.safetensors"))) == 3
    assert len(list((folder / "_latent_cache" / "text").glob("*.safetensors"))) == 3
    assert not (tmp_path / "run").exists()
    assert f"latents: cached on disk in {folder / '_latent_cache' / 'latents'}" in "\n".join(data.report())


def test_unwritable_dataset_caches_in_the_run_folder_and_says_so(folder: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    probe = output._probe_write
    monkeypatch.setattr(output, "_probe_write", lambda target: target != folder and probe(target))
    before = files_under(folder)
    fallback = tmp_path / "run" / "cache"
    with caplog.at_level(logging.INFO, logger="easel"):
        data = make(folder, fallback)
        data.prepare(FakeAdapter(), cache_text=True)
    assert files_under(folder) == before, "nothing is written into the dataset folder"
    assert len(list((fallback / "latents").glob("*.safetensors"))) == 3 and len(list((fallback / "text").glob("*"))) == 3
    said = [r.getMessage() for r in caplog.records if "is not writable" in r.getMessage()]
    assert said == [f"dataset '{folder}' is not writable: its disk cache goes to {fallback} instead of "
                    f"{folder / '_latent_cache'} (datasets[].cache_dir chooses another place)"]
    assert f"latents: cached on disk in {fallback / 'latents'}" in "\n".join(data.report())
    assert any(f"(on disk in {fallback / 'latents'})" in r.getMessage() for r in caplog.records)


def test_cache_dir_is_used_without_probing(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "_probe_write", lambda target: pytest.fail("probed although cache_dir is set"))
    data = make(folder, tmp_path / "run" / "cache", cache_dir=str(tmp_path / "mine"))
    data.prepare(FakeAdapter())
    assert len(list((tmp_path / "mine" / "latents").glob("*.safetensors"))) == 3


def test_can_write_looks_at_the_nearest_existing_folder(tmp_path: Path) -> None:
    assert output.can_write(tmp_path / "not" / "yet")
    (tmp_path / "file").write_text("x")
    assert not output.can_write(tmp_path / "file") and not output.can_write(tmp_path / "file" / "below")
    assert list(tmp_path.iterdir()) == [tmp_path / "file"], "the probe leaves nothing behind"


READ_ONLY_RUN = """
import json, sys
from pathlib import Path
from tests.data.helpers import FakeAdapter, dataset
from toolkit.data.loader import TrainData
folder, fallback = Path(sys.argv[1]), Path(sys.argv[2])
data = TrainData([dataset(folder, resolution=[64], cache_latents_to_disk=True)], trigger_word=None, batch_size=1, seed=0,
                 bucket_divisibility=16, fallback_cache=fallback)
data.prepare(FakeAdapter(), cache_text=True)
print(json.dumps(sorted(str(p) for p in fallback.rglob("*.safetensors"))))
"""


def _read_only_mounts() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _read_only_mounts(), reason="needs root and unshare -m for a read-only bind mount")
def test_a_really_read_only_dataset_folder_trains_from_the_run_folder(folder: Path, tmp_path: Path) -> None:
    fallback = tmp_path / "run" / "cache"
    before = files_under(folder)
    script = (f"mount --bind -o ro {folder} {folder} && touch {folder}/probe 2>/dev/null && exit 3; "
              f"exec {sys.executable} -c \"$0\" {folder} {fallback}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, READ_ONLY_RUN], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout.splitlines()[-1])) == 6, "3 latents and 3 text rows in the run folder"
    assert files_under(folder) == before
