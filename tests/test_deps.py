"""toolkit.deps: known library breaks are a clear error at start; the lock pins what requirements allow."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import run
from toolkit import deps
from toolkit.errors import EaselError

ROOT = Path(__file__).resolve().parent.parent


def versions(**given):
    return lambda name: given.get(name)


@pytest.mark.parametrize("transformers, peft, broken", [
    ("5.24.0", "0.21.2", True), ("5.25.1", "0.21.2", True), ("5.23.0", "0.21.2", False), ("5.24.0", "0.22.0", False),
])
def test_the_transformers_peft_break_is_found(transformers, peft, broken):
    found = deps.broken(version_of=versions(transformers=transformers, peft=peft))
    assert bool(found) is broken
    if broken:
        assert f"transformers {transformers} needs peft >= 0.22" in found[0] and f"peft {peft} is installed" in found[0]


def test_a_library_that_is_not_installed_breaks_nothing():
    assert deps.broken(version_of=versions(transformers="5.24.0")) == []


def test_run_stops_at_start_with_one_paragraph_naming_the_versions(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(deps, "installed", versions(transformers="5.24.0", peft="0.21.2"))
    assert run.main([str(tmp_path / "never_read.yaml")]) == 2
    err = capsys.readouterr().err
    assert "incompatible library versions: transformers 5.24.0 needs peft >= 0.22" in err
    assert "requirements.lock" in err and "Traceback" not in err


def test_the_installed_libraries_have_no_known_break():
    deps.check_installed()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def requirements(*files: str) -> list[Requirement]:
    found = []
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                found.append(Requirement(line))
    return found


def test_the_lock_pins_every_requirement_within_its_range_and_leaves_torch_to_the_machine():
    pins = lock_pins()
    assert "torch" not in pins
    for requirement in requirements("requirements.txt", "requirements-dev.txt"):
        name = canonicalize_name(requirement.name)
        if name == "torch" or (requirement.marker is not None and not requirement.marker.evaluate()):
            continue
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {requirement}"


def test_the_lock_has_no_known_break():
    pins = lock_pins()
    assert deps.broken(version_of=pins.get) == []


def test_lock_lines_keep_exact_pins_only_and_drop_machine_chosen_packages():
    freeze = ["torch==2.13.0+cpu", "nvidia-cublas-cu12==12.8", "triton==3.5", "-e git+https://x#egg=y",
              "Pillow==13.0.0", "# comment", "peft==0.21.2", "pkg @ file:///tmp/pkg.whl"]
    assert deps.lock_lines(freeze) == ["peft==0.21.2", "Pillow==13.0.0"]


def test_readme_and_ci_install_from_the_lock():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^pip install -q torch.*python -m pytest -q -n 2$", readme, re.M).group(0)
    assert command in ci and "-c requirements.lock" in command
    assert "-c requirements.lock" in re.search(r"^pip install torch.*quickstart.yaml$", readme, re.M).group(0)
