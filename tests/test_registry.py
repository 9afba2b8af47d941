import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from toolkit.registry import ArchSpec, Extension, JobSpec, ProcessSpec, Registry, RegistryError

from tests.conftest import ROOT


def make_extensions(tmp_path: Path, packages: dict[str, str]) -> Path:
    """A throwaway extensions folder with a unique package name (imports are cached per name)."""
    root = tmp_path / f"ext_{uuid.uuid4().hex[:8]}"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, source in packages.items():
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(textwrap.dedent(source))
    return root


GOOD = """
from toolkit.registry import Extension, ProcessSpec
EXTENSION = Extension(name="good", processes=(ProcessSpec("extension", "good_proc", "m:C", "m:R"),))
"""


def test_real_registry_has_the_built_ins():
    registry = Registry.discover(("jobs",), ROOT / "extensions")
    assert {"extension", "generate"} <= set(registry.jobs)
    assert registry.process("extension", "sd_trainer").name == "lora_trainer"
    assert registry.process("extension", "diffusion_trainer").name == "lora_trainer"
    assert registry.arch("zimage:turbo").name == "zimage:turbo"
    assert registry.arch("sd1").spec.name == "sd15"
    assert registry.legacy_arch_flags() == {"is_xl": "sdxl", "is_ssd": "sdxl", "is_vega": "sdxl", "is_flux": "flux"}
    assert registry.legacy_default_arch() == "sd15"
    assert not registry.broken


def test_discovery_imports_no_torch():
    import subprocess

    code = ("import sys; sys.path.insert(0, %r); from toolkit.registry import Registry; from pathlib import Path; "
            "Registry.discover(('jobs',), Path(%r)); print('torch' in sys.modules)") % (str(ROOT), str(ROOT / "extensions"))
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_broken_extension_is_reported_and_others_work(tmp_path):
    folder = make_extensions(tmp_path, {"good": GOOD, "broken": "import not_a_module_anywhere\n", "nodecl": "X = 1\n"})
    registry = Registry.discover(("jobs",), folder)
    assert registry.process("extension", "good_proc").name == "good_proc"
    assert "No module named 'not_a_module_anywhere'" in registry.broken["broken"]
    assert "EXTENSION" in registry.broken["nodecl"]
    with pytest.raises(RegistryError) as caught:
        registry.process("extension", "other")
    assert "'broken'" in str(caught.value) and "good_proc" in str(caught.value)


def test_duplicate_names_are_errors_naming_both():
    one = Extension("one", architectures=(ArchSpec("same", "a:B"),))
    two = Extension("two", architectures=(ArchSpec("other", "a:B", aliases=("same",)),))
    with pytest.raises(RegistryError, match="'one' and 'two'"):
        Registry([one, two])


def test_unknown_names_suggest_and_list():
    registry = Registry([Extension("x", jobs=(JobSpec("extension", "m:J"),), processes=(ProcessSpec("extension", "lora_trainer", "m:C", "m:R"),))])
    with pytest.raises(RegistryError, match="did you mean 'extension'.*Valid: extension"):
        registry.job("extenson")
    with pytest.raises(RegistryError, match="Valid: lora_trainer"):
        registry.process("extension", "zzz")


def test_registry_is_read_only():
    registry = Registry([Extension("x", jobs=(JobSpec("extension", "m:J"),))])
    with pytest.raises(TypeError):
        registry.jobs["new"] = JobSpec("new", "m:J")  # type: ignore[index]
