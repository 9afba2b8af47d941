"""Benchmark results that can be read back (bench/results.py) and the docs' tables made from them (bench/report.py)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.bench.test_bench import script


def test_gpu_train_appends_its_run_with_the_named_figures_and_baselines(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tiny", "--only", "zimage", "--steps", "1", "--warmup", "0", "--quantize", "float8_mm", "--variants",
            "default,ckpt=0", "--results", str(tmp_path)]
    gpu_train = script("gpu_train")
    assert gpu_train.main(argv) == 0
    assert gpu_train.main(argv[:-2] + ["--results", str(tmp_path)]) == 0
    [path] = tmp_path.glob("*.json")
    assert path.name == f"{datetime.date.today().isoformat()}-cpu-{path.name.split('-cpu-')[1]}"
    assert f"results: {path}" in capsys.readouterr().out
    runs = json.loads(path.read_text())["runs"]
    assert len(runs) == 2 and runs[0]["command"] == "python bench/gpu_train.py " + " ".join(argv)
    assert {"torch", "diffusers", "peft", "easel"} <= runs[0]["versions"].keys()
    first, no_ckpt, fp8 = runs[0]["records"]
    assert [r["case"] for r in (first, no_ckpt, fp8)] == [
        "Z-Image (tiny), bf16, fp32, ckpt", "Z-Image (tiny), bf16, fp32, no ckpt", "Z-Image (tiny), float8_mm base, fp32, ckpt"]
    assert all(r["device"] == runs[0]["device"] and r["zimage_64_s_per_step"] == r["s_per_step"] > 0 for r in (first, no_ckpt, fp8))
    assert first["baseline"] is None  # the eager bf16 row is the others' baseline
    assert no_ckpt["baseline"]["case"] == first["case"]
    assert no_ckpt["baseline"]["ratio"] == pytest.approx(no_ckpt["s_per_step"] / first["s_per_step"], rel=1e-3)
    assert fp8["baseline"]["case"] == first["case"] and "peak_gib" in fp8


def test_gpu_sample_records_the_turbo_figure(tmp_path: Path) -> None:
    assert script("gpu_sample").main(["--tiny", "--runs", "1", "--results", str(tmp_path)]) == 0
    [record] = json.loads(next(tmp_path.glob("*.json")).read_text())["runs"][0]["records"]
    assert record["zimage_turbo_64_s_per_image"] == record["s_per_image"] > 0 and record["steps"] == 8
    assert record["denoiser_s"] > 0 and record["baseline"] is None


def test_gpu_sample_with_the_prompt_remembered_is_not_the_goals_figure(tmp_path: Path) -> None:
    """--remember-prompts times the generate job's repeated prompt: the encoder does not run, and the record is its own."""
    assert script("gpu_sample").main(["--tiny", "--runs", "1", "--remember-prompts", "--results", str(tmp_path)]) == 0
    [record] = json.loads(next(tmp_path.glob("*.json")).read_text())["runs"][0]["records"]
    assert "zimage_turbo_64_s_per_image" not in record and "prompt remembered" in record["case"]
    assert record["text_encoders_s"] < 0.5 * record["denoiser_s"] / 8, "no encoder run: less than half a step's time"


def test_gpu_sample_records_the_sdxl_figure_at_30_steps_with_cfg_only(tmp_path: Path) -> None:
    gpu_sample = script("gpu_sample")
    assert gpu_sample.main(["--arch", "sdxl", "--tiny", "--runs", "1", "--results", str(tmp_path)]) == 0
    assert gpu_sample.main(["--arch", "sdxl", "--tiny", "--runs", "1", "--steps", "4", "--results", str(tmp_path)]) == 0
    goal, fewer = (run["records"][0] for run in json.loads(next(tmp_path.glob("*.json")).read_text())["runs"])
    assert goal["sdxl_64_s_per_image"] == goal["s_per_image"] > 0 and (goal["steps"], goal["guidance"]) == (30, 5.0)
    assert "sdxl_64_s_per_image" not in fewer and fewer["steps"] == 4
    assert goal["text_encoders_s"] > 0 and goal["denoiser_s"] > 0 and "SDXL" in goal["case"]


def test_results_are_written_by_default_on_a_gpu_only() -> None:
    results = script("results")
    assert results.target_folder(None, False, torch.device("cpu")) is None
    assert results.target_folder(None, False, torch.device("cuda")) == results.RESULTS
    assert results.target_folder("x", False, torch.device("cpu")) == Path("x")
    assert results.target_folder("x", True, torch.device("cuda")) is None
    assert results.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def run(command: str, *records: dict) -> dict:
    return {"command": command, "date": "2026-12-01", "device": "NVIDIA H200", "versions": {"torch": "2.13.0"},
            "records": [{"device": "NVIDIA H200", "baseline": None, **record} for record in records]}


def test_the_goals_table_takes_the_best_figure_and_checks_the_memory_limit(tmp_path: Path) -> None:
    (tmp_path / "2026-12-01-nvidia-h200.json").write_text(json.dumps({"runs": [
        run("python bench/gpu_train.py --only zimage",
            {"case": "eager", "s_per_step": 0.41, "zimage_1024_s_per_step": 0.41, "peak_gib": 15.0},
            {"case": "fp8 compiled", "s_per_step": 0.29, "zimage_1024_s_per_step": 0.29, "peak_gib": 9.0}),
        run("python bench/gpu_sample.py --compile",
            {"case": "turbo compiled", "s_per_image": 0.65, "zimage_turbo_1024_s_per_image": 0.65, "peak_gib": 20.0}),
    ]}))
    text = script("report").section(tmp_path)
    assert "| 0.290 s/step, 9.00 GiB (met) | fp8 compiled | NVIDIA H200, 2026-12-01 | `python bench/gpu_train.py --only zimage` |" in text
    assert "0.650 s/image, 20.00 GiB (not met)" in text  # fast enough, but over 14 GiB
    assert "| SDXL LoRA step at 1024 (rank 16, batch 1) | <= 0.45 s/step | not measured |" in text
    assert "| 2026-12-01 | NVIDIA H200 | turbo compiled | 0.650 s/image | 20.00 |" in text


def test_the_docs_tables_are_the_results_files() -> None:
    """docs/PERFORMANCE.md's results section is bench/report.py's output over bench/results/*.json."""
    assert script("report").main(["--check"]) == 0


def test_optimizer_step_records_both_layouts_with_the_per_tensor_one_as_baseline(tmp_path: Path) -> None:
    argv = ["--only", "sdxl", "--optimizers", "adamw,adamw8bit", "--values-per-tensor", "4", "--steps", "1",
            "--results", str(tmp_path)]
    assert script("optimizer_step").main(argv) == 0
    records = json.loads(next(tmp_path.glob("*.json")).read_text())["runs"][0]["records"]
    assert [(r["optimizer"], r["flat"]) for r in records] == [("adamw", False), ("adamw", True), ("adamw8bit", False),
                                                              ("adamw8bit", True)]
    assert all(r["tensors"] == 1444 and r["optimizer_ms"] > 0 for r in records), "SDXL's rank-16 LoRA: 1,444 tensors"
    flat = records[3]
    assert flat["baseline"]["case"] == records[2]["case"]
    assert flat["baseline"]["ratio"] == pytest.approx(flat["optimizer_ms"] / records[2]["optimizer_ms"], rel=1e-3)


def test_optimizer_step_notes_an_optimizer_whose_package_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.errors import EaselError
    from toolkit.train import optimizers

    def missing(name: str) -> Any:
        raise EaselError(f"optimizer '{name}' needs bitsandbytes: `pip install bitsandbytes` (or choose adamw).")

    monkeypatch.setattr(optimizers, "optimizer_class", missing)
    argv = ["--only", "zimage", "--optimizers", "lion", "--values-per-tensor", "4", "--steps", "1", "--no-results"]
    assert script("optimizer_step").main(argv) == 0
    assert "| lion | n/a | n/a | optimizer 'lion' needs bitsandbytes |" in capsys.readouterr().out
