"""``job: convert``: each tool runs from its example config through run.py's main() on tiny models."""

import json
import subprocess
import sys

import pytest
import torch

import run
from toolkit.config.blocks import ModelConfig
from toolkit.lora_io import apply_loras, remove_loras
from tests.lora_io.helpers import load_lora, save_lora
from toolkit.lora_io.model import delta_weight
from toolkit.models.loading import load_adapter

from tests.conftest import ROOT
from tests.lora_io.helpers import image, max_diff, random_lora

EXAMPLES = ROOT / "config" / "examples"
TOOLS = ("convert_lora", "merge_into_model", "merge_loras", "resize_lora", "inspect_lora")


@pytest.fixture(scope="module")
def tiny(registry):
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch), registry, device="cpu", dtype="fp32")
        return cache[arch]

    return get


def _lora_file(adapter, path, arch: str, seed: int, rank: int = 4, **meta):
    state = random_lora(adapter.components(), adapter.lora_targets(train_text_encoder=True), rank=rank, seed=seed)
    return save_lora(state, path, arch=arch, metadata=meta or None)


def _main(name: str, *overrides: str) -> int:
    args = [str(EXAMPLES / f"{name}.yaml")]
    for item in overrides:
        args += ["--set", item]
    return run.main(args)


def test_convert_then_inspect(tiny, tmp_path, capsys):
    source = _lora_file(tiny("zimage"), tmp_path / "z.safetensors", "zimage", 1, name="zlora", trigger_word="<springwc>")
    out, keys = tmp_path / "z_diffusers.safetensors", tmp_path / "keys.txt"
    assert _main("convert_lora", f"config.process.0.input={source}", f"config.process.0.output={out}",
                 f"config.process.0.report_file={keys}", f"config.process.1.input={out}") == 0
    original, converted = load_lora(source), load_lora(out)
    assert converted.format == "diffusers" and converted.metadata["ss_output_name"] == "zlora"
    assert all(torch.equal(a, converted.state_dict()[k]) for k, a in original.state_dict().items())
    rows = keys.read_text().splitlines()
    assert len(rows) == len(original.modules) and rows[0].startswith("diffusion_model.")
    printed = capsys.readouterr().out
    assert "architecture: zimage" in printed and "format: diffusers" in printed and "<springwc>" in printed


def test_merge_into_model_matches_applied_loras(tiny, tmp_path, registry):
    adapter = tiny("sd15")
    first = _lora_file(adapter, tmp_path / "a.safetensors", "sd15", 2)
    second = _lora_file(adapter, tmp_path / "b.safetensors", "sd15", 3)
    apply_loras(adapter, [(first, 0.8), (second, 0.4)])
    try:
        applied = image(adapter)
    finally:
        remove_loras(adapter)
    folder = tmp_path / "merged"
    assert _main("merge_into_model", f"config.process.0.loras.0.path={first}", f"config.process.0.loras.1.path={second}",
                 "config.process.0.model.name_or_path=tiny:sd15", f"config.process.0.output={folder}",
                 "config.process.0.device=cpu", "config.process.0.dtype=fp32") == 0
    merged = load_adapter(ModelConfig(name_or_path=str(folder), arch="sd15"), registry, device="cpu", dtype="fp32")
    assert max_diff(image(merged), applied) <= 1.0


def test_merge_loras_concat_and_svd(tiny, tmp_path):
    adapter = tiny("sd15")
    first = _lora_file(adapter, tmp_path / "a.safetensors", "sd15", 4)
    second = _lora_file(adapter, tmp_path / "b.safetensors", "sd15", 5, rank=2)
    concat, svd = tmp_path / "concat.safetensors", tmp_path / "svd.safetensors"
    assert _main("merge_loras", *[f"config.process.{p}.loras.{i}.path={f}" for p in (0, 1) for i, f in enumerate((first, second))],
                 f"config.process.0.output={concat}", f"config.process.1.output={svd}", "config.process.1.rank=3") == 0
    a, b = load_lora(first), load_lora(second)
    merged, reduced = load_lora(concat), load_lora(svd)
    assert merged.format == "kohya" and json.loads(merged.metadata["easel.merged_from"])[1]["weight"] == 0.4
    for key, module in merged.modules.items():
        expected = 0.8 * delta_weight(a.modules[key]) + 0.4 * delta_weight(b.modules[key])
        assert module.rank == 6 and torch.allclose(delta_weight(module), expected, atol=1e-3)
    assert {m.rank for m in reduced.modules.values()} == {3}


def test_resize_reports_and_writes_the_smaller_lora(tiny, tmp_path, caplog):
    source = _lora_file(tiny("sdxl"), tmp_path / "x.safetensors", "sdxl", 6, rank=8)
    out = tmp_path / "x_r8.safetensors"
    with caplog.at_level("INFO", logger="easel"):
        assert _main("resize_lora", f"config.process.0.input={source}", f"config.process.0.output={out}",
                     "config.process.0.rank=3") == 0
    resized = load_lora(out)
    assert resized.format == "kohya" and resized.arch == "sdxl"
    assert {m.rank for m in resized.modules.values()} == {3}
    assert {t.dtype for m in resized.modules.values() for t in m.tensors.values()} == {torch.float16}
    assert resized.metadata["ss_network_dim"] == "3"
    assert any("kept energy" in record.getMessage() for record in caplog.records)


def test_inspect_writes_json(tiny, tmp_path):
    folder = tmp_path / "loras"
    _lora_file(tiny("sdxl"), folder / "one.safetensors", "sdxl", 7, name="one", trigger_word="ohwx",
               tag_frequency={"ohwx": 3, "cat": 2})
    report = tmp_path / "inspect.json"
    assert _main("inspect_lora", f"config.process.0.input.0={folder}", f"config.process.0.output_file={report}") == 0
    (info,) = json.loads(report.read_text())
    assert info["architecture"] == "sdxl" and info["format"] == "kohya"
    assert info["trigger_words"] == ["ohwx", "cat"]
    assert set(info["components"]) == {"unet", "text_encoder", "text_encoder_2"} and info["components"]["text_encoder_2"] == 12
    assert info["rank_alpha"][0]["rank"] == 4


@pytest.mark.parametrize("name", TOOLS)
def test_dry_run_imports_no_torch(name):
    code = ("import sys, run; code = run.main(['--dry-run', sys.argv[1]]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / f"{name}.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "process 0:" in result.stdout and result.stdout.strip().endswith("NO_TORCH")
