"""The benchmarks run (tiny sizes, on the CPU) and print their figures and the command that reruns them."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| model") and not line.startswith("| setup")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_gpu_train_runs_every_configuration_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tiny", "--steps", "1", "--warmup", "0", "--quantize", "qint8", "--offload", "0.5"]
    assert script("gpu_train").main(argv) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert [(row[0], row[1]) for row in rows] == [
        ("Z-Image (tiny)", "bf16"), ("Z-Image (tiny)", "qint8 base"), ("Z-Image (tiny)", "qint8 base, 0.5 offloaded"),
        ("SDXL (tiny)", "bf16"), ("SDXL (tiny)", "qint8 base"), ("SDXL (tiny)", "qint8 base, 0.5 offloaded")]
    assert all(row[2] == "fp32, ckpt" and float(row[5]) > 0 and float(row[8]) > 0 and "error" not in row[10] for row in rows)
    assert rows[2][10] == "2 blocks streamed"
    assert "rerun: python bench/gpu_train.py " + " ".join(argv) in output


def test_gpu_train_knows_qwen_image(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tiny", "--only", "qwen_image", "--steps", "1", "--warmup", "0", "--quantize", "qint8"]
    assert script("gpu_train").main(argv) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(row[0], row[1], row[4]) for row in rows] == [("Qwen-Image (tiny)", "bf16", "16"), ("Qwen-Image (tiny)", "qint8 base", "16")]
    assert all(float(row[5]) > 0 and float(row[8]) > 0 and row[10] == "" for row in rows)


def test_gpu_train_compares_trainer_variants_on_one_model(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.models import memory

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")
    argv = ["--tiny", "--cpu-bf16", "--only", "zimage", "--steps", "1", "--warmup", "1", "--quantize", "qint8",
            "--variants", "graphs,compile+ckpt=2,default,autocast,ckpt=0,qint8+ckpt=0"]
    gpu_train = script("gpu_train")
    built: list[str] = []
    original = gpu_train.prepare
    monkeypatch.setattr(gpu_train, "prepare", lambda case, *rest: built.append(case.label) or original(case, *rest))
    assert gpu_train.main(argv) == 0
    rows = table_rows(capsys.readouterr().out)
    # compiled variants last (CUDA graphs after them); the 8-bit case runs those naming it; one model per case
    assert [(row[1], row[2]) for row in rows] == [
        ("bf16", "working copies, ckpt"), ("bf16", "autocast casts, ckpt"), ("bf16", "working copies, no ckpt"),
        ("bf16", "working copies, ckpt 1 in 2, compiled"), ("bf16", "working copies, ckpt, compiled, CUDA graphs"),
        ("qint8 base", "working copies, no ckpt")]
    assert built == ["bf16", "qint8 base"]
    argv[argv.index("--variants") + 1] = "autocast,int8+compile"  # an unnamed 8-bit type runs bf16's first
    argv[argv.index("--quantize") + 1] = "qint8,int8"
    built.clear()
    assert gpu_train.main(argv) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(row[1], row[2]) for row in rows] == [("bf16", "autocast casts, ckpt"), ("qint8 base", "autocast casts, ckpt"),
                                                   ("int8 base", "working copies, ckpt, compiled")]
    assert all(float(row[5]) > 0 and float(row[8]) > 0 and row[10] == "" for row in rows)
    with pytest.raises(SystemExit, match="unknown part 'ckpt2'"):
        gpu_train.main(["--tiny", "--variants", "default,ckpt2"])


def test_gpu_sample_makes_images_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tiny", "--runs", "1", "--steps", "2", "--quantize", "int8", "--offload-te", "--vae-tiling", "32"]
    assert script("gpu_sample").main(argv) == 0
    output = capsys.readouterr().out
    [row] = table_rows(output)
    assert "transformer int8" in row[0] and "text encoder bf16, streamed" in row[0] and row[2] == "2"
    assert "VAE tiles 32" in row[0]
    assert all(float(value) > 0 for value in row[3:7])
    assert "rerun: python bench/gpu_sample.py " + " ".join(argv) in output


def test_vae_memory_compares_tiles_with_the_whole_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--tiny", "--runs", "1", "--results", str(tmp_path)]
    assert script("vae_memory").main(argv) == 0
    whole, *tiled = table_rows(capsys.readouterr().out)
    assert whole[0] == "whole image" and whole[2] == "1.00" and whole[-1] == "0.0%"
    assert [row[0] for row in tiled] == ["tiles of 64 px", "tiles of 32 px"]
    assert all(float(row[-1].rstrip("%")) > 0 for row in tiled), "a tiled decode is blended, not the whole image"
    [run] = json.loads(next(tmp_path.glob("*.json")).read_text())["runs"]
    records = run["records"]
    assert [record["tile"] for record in records] == [0, 64, 32] and records[0]["baseline"] is None
    assert records[1]["baseline"]["case"] == "FLUX.1 VAE whole image" and records[1]["peak_gib"] >= 0


def test_overhead_prints_both_medians_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rounds", "1", "--steps", "2", "--warmup", "1", "--resolution", "64", "--batch", "2"]
    assert script("overhead").main(argv) == 0
    output = capsys.readouterr().out
    assert re.search(r"easel trainer step +median +[\d.]+ ms", output)
    assert re.search(r"diffusers \+ peft loop +median +[\d.]+ ms", output)
    ratio = float(re.search(r"ratio easel / reference ([\d.]+)", output).group(1))  # type: ignore[union-attr]
    assert 0.3 < ratio < 3  # one timed pair of steps: a sanity range, not the goal
    assert "rerun: python bench/overhead.py " + " ".join(argv) in output


def test_startup_times_help_and_dry_run_without_torch(capsys: pytest.CaptureFixture[str]) -> None:
    assert script("startup").main(["--repeats", "1"]) == 0
    output = capsys.readouterr().out
    assert output.count("torch imported: False") == 2
    assert "rerun: python bench/startup.py --repeats 1" in output


def test_activations_fall_with_more_checkpointing(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--only", "sdxl", "--resolution", "256", "--intervals", "1,2,0"]
    assert script("activations").main(argv) == 0
    output = capsys.readouterr().out
    rows = [row for row in table_rows(output) if len(row) == 6]
    assert [(row[2], row[3]) for row in rows] == [("1 in 1", "100%"), ("1 in 2", "50%"), ("none", "0%")]
    saved = [float(row[4]) for row in rows]
    assert 0 < saved[0] < saved[1] < saved[2]
    assert "rerun: python bench/activations.py " + " ".join(argv) in output


@pytest.mark.parametrize("arch", ["flux", "flux2_klein_4b"])
def test_gpu_train_knows_the_flux_models(arch: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert script("gpu_train").main(["--tiny", "--steps", "1", "--warmup", "0", "--quantize", "none", "--only", arch]) == 0
    (row,) = table_rows(capsys.readouterr().out)
    assert row[0].endswith("(tiny)") and row[0].startswith("FLUX") and float(row[5]) > 0 and "error" not in row[10]


@pytest.mark.slow
def test_the_weight_memory_table_of_the_docs_is_the_computed_one() -> None:
    """docs/PERFORMANCE.md's "Expected weight memory" rows are bench/weights.py's output, not typed figures."""
    table = script("weights").table()
    docs = (BENCH.parent / "docs" / "PERFORMANCE.md").read_text(encoding="utf-8")
    assert table in docs
    rows = table_rows(table)
    assert {row[0] for row in rows} >= {"FLUX.1 dev 12B transformer", "FLUX.2 dev 32B transformer", "T5-XXL encoder (FLUX.1)"}


def test_structure_compares_plain_and_controlnet_img2img(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--arch", "sd15", "--strengths", "0.2,1", "--scales", "1", "--seeds", "1", "--steps", "4", "--size", "64"]
    assert script("structure").main(argv) == 0
    output = capsys.readouterr().out
    light, heavy = [row for row in table_rows(output) if row[0] == "sd15"]
    assert (light[1], heavy[1]) == ("0.2", "1") and all(0 <= float(value) <= 1 for value in light[2:] + heavy[2:])
    assert float(light[2]) > float(heavy[2]), "plain img2img keeps less of the input at strength 1"
    assert "rerun: python bench/structure.py " + " ".join(argv) in output


@pytest.mark.extended
@pytest.mark.parametrize("arch", ["zimage", "sdxl"])
def test_narrow_models_have_the_full_models_layers_and_heads(arch: str) -> None:
    """--narrow counts a full-size step's operators on the CPU: the same modules in the same order, the same heads."""
    import diffusers
    import torch

    fullsize = script("fullsize")
    cls = getattr(diffusers, fullsize.DENOISERS[arch][1])
    with torch.device("meta"):
        full, narrow = cls(**fullsize.DENOISERS[arch][2]), cls(**fullsize.NARROW[arch])

    def layout(model: torch.nn.Module) -> list[tuple[str, str, int | None]]:
        return [(name, type(m).__name__, getattr(m, "heads", None)) for name, m in model.named_modules()]

    assert layout(narrow) == layout(full)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in full.parameters()) / 15  # 1/56 and 1/18


def test_the_launch_count_takes_a_multi_tensor_operator_as_one_launch() -> None:
    """On the CPU ``_foreach_mul_`` runs one ``mul_`` per tensor; a GPU runs it as multi-tensor kernels, so it is one."""
    gpu_train = script("gpu_train")
    grads = [torch.ones(3) for _ in range(50)]
    with torch.profiler.profile() as prof:
        torch._foreach_mul_(grads, 0.5)
        torch.add(grads[0], grads[1])
    events = prof.events()
    counts = gpu_train.outside_launches(events)
    assert counts == {"aten::_foreach_mul_": 1, "aten::add": 1}
    assert gpu_train.launching(events) == 2 == gpu_train.launching(events, outside_compiled=True)
    expected = {"aten::_foreach_mul_": 1, "aten::add": 1}  # the mul_s are inside the first
    assert gpu_train.dispatches(events) == expected == gpu_train.dispatches(events, outside_compiled=True)
