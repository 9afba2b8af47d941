"""run.py end to end: flags, exit codes, dry run, error paragraphs, config lookup."""

import subprocess
import sys
from pathlib import Path

import pytest

import run
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures"


def note_config(tmp_path: Path, name: str = "note", message: str = "hi", extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"job: extension\nconfig:\n  name: {name}\n  process:\n    - type: example_note\n"
                    f"      training_folder: {tmp_path / 'out'}\n      message: \"{message}\"\n{extra}")
    return path


def image_folder(tmp_path: Path, count: int = 3) -> Path:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (96, 64), (40 * i, 90, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"picture {i}")
    return folder


def python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)


def test_runs_a_job_and_writes_the_run_folder(tmp_path):
    assert run.main([str(note_config(tmp_path))]) == 0
    folder = tmp_path / "out" / "note"
    assert (folder / "note.txt").read_text() == "hi\n"
    assert "message: hi" in (folder / "config.yaml").read_text()
    assert "wrote" in (folder / "log.txt").read_text()


def test_set_overrides_are_typed_and_name_fills_the_tag(tmp_path):
    config = note_config(tmp_path, name='"[name]"', message="[name] says hi")
    assert run.main([str(config), "--name", "bob", "--set", "config.process.0.repeat=3"]) == 0
    assert (tmp_path / "out" / "bob" / "note.txt").read_text() == "bob says hi\n" * 3


def test_bad_config_exits_2_with_one_paragraph_and_no_traceback(tmp_path):
    config = note_config(tmp_path, extra="      repeet: 2\n")
    result = python("run.py", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "line 8, col 7: config.process[0].repeet: unknown key 'repeet'; did you mean 'repeat'?" in result.stderr
    debug = python("run.py", str(config), "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_recover_goes_on_and_exits_non_zero(tmp_path):
    bad = note_config(tmp_path, name="bad", extra="      repeat: 0\n")
    good = note_config(tmp_path, name="good")
    assert run.main([str(bad), str(good)]) == 2
    assert not (tmp_path / "out" / "good").exists()
    assert run.main(["--recover", str(bad), str(good)]) == 2
    assert (tmp_path / "out" / "good" / "note.txt").exists()


def test_config_found_under_config_folder():
    assert run.main(["--dry-run", "example_note"]) == 0
    with pytest.raises(SystemExit):
        run.main([])


def test_missing_config_names_candidates(capsys):
    assert run.main(["config/examples/example_not.yaml"]) == 2
    assert "did you mean 'config/examples/example_note.yaml'?" in capsys.readouterr().err


def test_help_and_dry_run_import_no_torch(tmp_path):
    dataset = image_folder(tmp_path)
    probe = ("import sys, run\ntry:\n    code = run.main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    assert python("-c", probe, "--help").stdout.strip().endswith("NO-TORCH 0")
    result = python("-c", probe, "--dry-run", str(FIXTURES / "aitoolkit_zimage_turbo.yaml"),
                    "--set", f"config.process.0.datasets.0.folder_path={dataset}")
    assert result.stdout.strip().endswith("NO-TORCH 0"), result.stderr


def test_ai_toolkit_zimage_config_dry_run_lists_ignored_keys_once(tmp_path):
    dataset = image_folder(tmp_path)
    result = python("run.py", "--dry-run", str(FIXTURES / "aitoolkit_zimage_turbo.yaml"),
                    "--set", f"config.process.0.datasets.0.folder_path={dataset}")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "ignored keys" in line]
    assert len(warnings) == 1
    for key in ("process[].sqlite_db_path", "process[].performance_log_every", "process[].monitoring",
                "train.switch_boundary_every", "datasets[].controls", "save.push_to_hub", "sample.num_frames"):
        assert key in warnings[0], key
    assert "architecture: zimage:turbo" in result.stdout
    assert "<springwc> a cottage by a river" in result.stdout


def test_missing_dataset_folder_is_an_error_at_dry_run(tmp_path):
    result = python("run.py", "--dry-run", str(FIXTURES / "aitoolkit_zimage_turbo.yaml"))
    assert result.returncode == 2
    assert "/path/to/images/folder" in result.stderr and "Traceback" not in result.stderr


def test_second_run_with_the_same_name_continues_and_keeps_the_old_config(tmp_path, capsys):
    first = note_config(tmp_path, message="first")
    assert run.main([str(first)]) == 0
    folder = tmp_path / "out" / "note"
    assert run.main([str(first)]) == 0  # the same config again: continued, nothing kept aside
    assert "Continuing the run in" in capsys.readouterr().err
    assert sorted(p.name for p in folder.glob("config*.yaml")) == ["config.yaml"]
    second = note_config(tmp_path, message="second")
    assert run.main([str(second)]) == 0
    kept = [p for p in folder.glob("config.*.yaml")]
    assert len(kept) == 1 and "message: first" in kept[0].read_text()
    assert "message: second" in (folder / "config.yaml").read_text()
    log_text = (folder / "log.txt").read_text()
    assert log_text.count("wrote") == 3 and f"the old one is kept as {kept[0]}" in log_text


def test_config_changes_within_one_second_keep_every_old_config(tmp_path, monkeypatch):
    from toolkit import output

    monkeypatch.setattr(output.time, "strftime", lambda _fmt: "20260101-000000")
    folder = output.RunFolder(tmp_path, "run")
    for version in range(4):
        folder.open({"version": version})
        folder.close()
    kept = sorted(p.name for p in folder.path.glob("config.*.yaml"))
    assert kept == ["config.20260101-000000-2.yaml", "config.20260101-000000-3.yaml", "config.20260101-000000.yaml"]
    texts = {(folder.path / name).read_text() for name in kept} | {(folder.path / "config.yaml").read_text()}
    assert texts == {f"version: {v}\n" for v in range(4)}


def test_dry_run_reports_every_missing_folder_together(tmp_path, capsys):
    config = tmp_path / "missing.yaml"
    lines = ["job: extension", "config:", "  name: m", "  process:"]
    for folders in ([tmp_path / "a", tmp_path / "b"], [tmp_path / "c"]):
        lines += ["    - type: lora_trainer", "      model: {name_or_path: tiny:sd15, arch: sd15}", "      datasets:"]
        lines += [f"        - folder_path: {folder}" for folder in folders]
    config.write_text("\n".join(lines) + "\n")
    assert run.main(["--dry-run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "3 problems in the config" in err
    for line, where in ((8, "process[0].datasets[0]"), (9, "process[0].datasets[1]"), (13, "process[1].datasets[0]")):
        assert f"line {line}, col 11: config.{where}.folder_path: the dataset folder" in err, err
