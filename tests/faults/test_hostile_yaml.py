"""Hostile YAML: alias loops, alias bombs, deep nesting and huge files fail fast with one config error (exit 2).

Before: a recursive alias raised RecursionError (exit 1, "unexpected"), and a billion-laughs file grew
without bound in memory while it was built.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from tests.train.harness import run_main
from toolkit.config.yaml_io import MAX_BYTES, MAX_DEPTH, MAX_VALUES, load_text
from toolkit.errors import ConfigError

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]\n" for before, name in zip("abcdefgh", "bcdefghi"))
"""Nine levels of nine: 387 million strings once expanded."""

CASES = {
    "alias inside itself": ("job: extension\nconfig: &loop\n  name: x\n  process: [*loop]\n", "refers to a block that contains it"),
    "mapping alias loop": ("a: &a {b: {c: *a}}\n", "refers to a block that contains it"),
    "merge key loop": ("a: &a\n  <<: *a\n  x: 1\n", "refers to a block that contains it"),
    "billion laughs": (LAUGHS, f"expands to more than {MAX_VALUES:,} values"),
    "deep flow nesting": ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", f"nested more than {MAX_DEPTH} deep"),
    "deep alias nesting": ("a: &a [[[[[[[[[[1]]]]]]]]]]\n" + "".join(f"{n}: &{n} [[[[[[[[[[*{b}]]]]]]]]]]\n"
                                                                    for b, n in zip("abcdefghij", "bcdefghijk")),
                           f"nested more than {MAX_DEPTH} deep"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_yaml_is_one_config_error_fast_and_small(name: str) -> None:
    text, expected = CASES[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match=expected):
            load_text(text, "hostile.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 20 and peak < 200 * 2 ** 20, (name, peak)


def test_through_run_py_it_exits_2_with_the_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text(CASES["alias inside itself"][0])
    assert run_main([str(config)]) == 2
    error = capsys.readouterr().err
    assert "line 2, col 9" in error and "refers to a block that contains it" in error and "unexpected" not in error


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path, capsys) -> None:
    config = tmp_path / "huge.yaml"
    with config.open("w") as handle:
        handle.write("job: extension\n# " + "x" * (MAX_BYTES + 10) + "\n")
    assert run_main([str(config)]) == 2
    assert f"a config may hold at most {MAX_BYTES:,}" in capsys.readouterr().err


def test_aliases_that_reuse_a_block_still_work() -> None:
    data, _ = load_text("base: &base {lr: 1, steps: 2}\nrun: {<<: *base, steps: 3}\nagain: *base\n", "ok.yaml")
    assert data == {"base": {"lr": 1, "steps": 2}, "run": {"steps": 3, "lr": 1}, "again": {"lr": 1, "steps": 2}}
