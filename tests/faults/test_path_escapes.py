"""Name and path escapes: a run's name is one safe path segment, and every file a job writes stays under its root.

Before: ``config.name: ../../x`` wrote the run's files outside training_folder, and the name was joined twice
(the folder, then each file's name), so further up; ``.`` and ``..`` gave files named ``..safetensors``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.train.harness import fake_registry, make_dataset, run_main, write_config
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError, EaselError
from toolkit.output import RunFolder, run_folder_path
from toolkit.paths import is_under
from toolkit.train.checkpoint import SaveFiles
from toolkit.train.state import state_path

HOSTILE = st.one_of(
    st.sampled_from(["..", ".", "../x", "../../x", "/tmp/x", "a/b", "a\\b", "x/..", "\\..\\..\\x", "..\\x", " x", "x\n",
                     "a\x00b", "", "~/x", "$HOME", "..."]),
    st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=6), st.text(max_size=6)),
    st.text(st.characters(codec="utf-8"), max_size=12),
)


def _config(folder: Path, name: str) -> Path:
    path = folder / "job.json"
    process = {"type": "fake_trainer", "training_folder": str(folder / "output"), "model": {"name_or_path": "tiny:fake", "arch": "fake"},
               "datasets": [{"folder_path": str(folder / "data")}]}
    path.write_text(json.dumps({"job": "extension", "config": {"name": name, "process": [process]}}, indent=1))
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HOSTILE)
def test_a_hostile_name_is_a_config_error_or_stays_under_the_training_folder(name: str) -> None:
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        try:
            loaded = load_job_config(_config(folder, name), fake_registry())
        except ConfigError as err:
            assert "config.name" in str(err) and "line 4, col" in str(err), str(err)
            return
        root = folder / "output"
        run = run_folder_path(root, loaded.name)
        saves = SaveFiles(run, loaded.name, keep=1)
        for path in (run, saves.step_lora(7), saves.final_lora, state_path(run, loaded.name, 7), RunFolder(root, loaded.name).path):
            assert is_under(root, path) and path != root, (name, path)
        assert os.path.dirname(os.path.realpath(run)) == os.path.realpath(root)


@pytest.mark.parametrize("name", ["../escaped", "..", ".", "/tmp/absolute", "a/b"])
def test_the_issue_names_are_refused_at_their_line_and_nothing_is_written(tmp_path: Path, name: str, capsys) -> None:
    config = write_config(tmp_path / "job", name="fakerun")
    data = json.loads(config.read_text())
    data["config"]["name"] = name
    config.write_text(json.dumps(data, indent=1))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert run_main([str(config)]) == 2
    error = capsys.readouterr().err
    line = next(number for number, text in enumerate(config.read_text().splitlines(), 1) if '"name"' in text)
    assert f"line {line}, col" in error and "config.name" in error and "one plain name" in error
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_a_name_from_the_command_line_is_checked_too(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, name="[name]", train={"steps": 1}, sample=None)
    assert run_main([str(config), "--name", "../../../x"]) == 2
    assert "config.name" in capsys.readouterr().err
    assert not (tmp_path / "output").exists()


def test_an_odd_but_plain_name_keeps_every_file_under_the_training_folder(tmp_path: Path) -> None:
    """Dots, spaces and non-ASCII are plain names: the run writes only below <training_folder>/<name>/."""
    name = "..v1 ünï run"
    config = write_config(tmp_path, name=name, train={"steps": 2}, save={"save_every": 1}, sample={"sample_every": 1})
    outside = {p for p in tmp_path.rglob("*") if p != tmp_path / "output"}
    assert run_main([str(config)]) == 0
    written = {p for p in tmp_path.rglob("*")} - outside - {tmp_path / "output"}
    run = tmp_path / "output" / name
    assert written and all(p == run or run in p.parents for p in written), sorted(written)
    assert (run / f"{name}.safetensors").is_file() and (run / f"{name}_000000001.state.pt").is_file()


def test_a_metadata_file_naming_files_outside_its_dataset_is_refused_unless_allowed(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data")
    make_dataset(tmp_path / "elsewhere", count=1)
    (data / "metadata.jsonl").write_text('{"file_name": "img0.png", "text": "inside"}\n'
                                         '{"file_name": "../elsewhere/img0.png", "text": "outside"}\n')
    config = write_config(tmp_path, train={"steps": 1}, sample=None)
    assert run_main(["--dry-run", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"{data / 'metadata.jsonl'}, line 2: '../elsewhere/img0.png' lies outside the dataset folder" in error
    assert "allow_outside_files: true" in error
    allowed = write_config(tmp_path, datasets=[{"folder_path": str(data), "resolution": [64], "allow_outside_files": True}])
    assert run_main(["--dry-run", str(allowed)]) == 0
    assert f"- {data}: 5 images" in capsys.readouterr().out


def test_prep_writes_no_image_name_outside_its_output(tmp_path: Path) -> None:
    from toolkit.prep.captions import write_captions

    with pytest.raises(EaselError, match="leads outside"):
        write_captions(tmp_path / "out", {"../evil.png": "x"}, ["txt"], "txt")
    assert not (tmp_path / "evil.txt").exists()
