"""bench/gpu_goals.py: the goals' benchmarks in turn inside a budget, the goals table from what they wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.test_bench import script, table_rows

WRITES_A_FIGURE = ("python -c \"import json, sys, pathlib; pathlib.Path(sys.argv[2], 'run.json').write_text(json.dumps("
                   "{'runs': [{'command': 'fake', 'date': '2026-12-04', 'device': 'a GPU', 'versions': {}, 'records': "
                   "[{'case': 'fake SDXL', 'sdxl_1024_s_per_image': 1.5, 'peak_gib': 9.0}]}]})); print('measured')\"")
SLEEPS = "python -c \"import time; print('started', flush=True); time.sleep(60)\""


def test_each_step_runs_in_turn_inside_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    goals = script("gpu_goals")
    Goal = goals.GOALS[0].__class__
    monkeypatch.setattr(goals, "GOALS", [Goal("SDXL image", "sdxl_1024_s_per_image", 2.0, "s/image", command=WRITES_A_FIGURE,
                                              name="sdxl_image", expected_s=1),
                                         Goal("slow", "x", 1.0, "s", command=SLEEPS, name="slow", expected_s=1),
                                         Goal("long", "y", 1.0, "s", command=SLEEPS, name="long", expected_s=10_000)])
    monkeypatch.setattr(goals, "EXTRAS", [])
    assert goals.main(["--budget", "6", "--results", str(tmp_path)]) == 1  # one step was stopped
    output = capsys.readouterr().out
    outcomes = {row[0]: row[1] for row in table_rows(output) if row[0] in ("sdxl_image", "slow", "long")}
    assert outcomes["sdxl_image"].startswith("done in")
    assert outcomes["slow"].startswith("stopped at the budget after")
    assert outcomes["long"].startswith("skipped: expects 10000 s")
    assert "measured" in (tmp_path / "sdxl_image.log").read_text() and "started" in (tmp_path / "slow.log").read_text()
    [sdxl] = [row for row in table_rows(output) if row[0] == "SDXL image, 30 steps at 1024"]
    assert sdxl[2] == "1.500 s/image, 9.00 GiB (met)" and sdxl[4] == "a GPU, 2026-12-04"


def test_the_plan_names_every_goal_then_the_extras() -> None:
    goals = script("gpu_goals")
    names = [step.name for step in goals.plan(None, "/d")]
    assert names == ["zimage_train", "sdxl_train", "turbo_image", "sdxl_image", "vae", "optimizer", "peers"]
    assert [step.name for step in goals.plan(None, None)][-1] == "optimizer", "no diffusers checkout: no peers step"
    assert goals.plan(["peers"], "/d")[0].command == "python bench/peers.py --diffusers /d"
    with pytest.raises(SystemExit, match="unknown name"):
        goals.plan(["zimage"], None)
    with pytest.raises(SystemExit, match="needs --diffusers"):
        goals.plan(["peers"], None)
