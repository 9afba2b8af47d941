"""Prompt lines: inline flags (sd-scripts / ai-toolkit) and A1111 <lora:name:weight> tags."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.errors import EaselError
from toolkit.sampling.prompts import parse_prompt, read_prompts


def test_plain_prompt() -> None:
    spec = parse_prompt("  a photo of a cat  ")
    assert spec.prompt == "a photo of a cat" and spec.negative is None and spec.loras == []
    assert (spec.width, spec.height, spec.seed, spec.guidance_scale, spec.steps) == (None,) * 5


def test_all_flags() -> None:
    spec = parse_prompt("a cat on a chair --n blurry, low quality --w 768 --h 512 --seed 42 --cfg 6.5 --steps 20 --gr 0.7")
    assert spec.prompt == "a cat on a chair" and spec.negative == "blurry, low quality"
    assert (spec.width, spec.height, spec.seed, spec.guidance_scale, spec.steps, spec.guidance_rescale) == (768, 512, 42, 6.5, 20, 0.7)


def test_sd_scripts_short_flags_and_case() -> None:
    spec = parse_prompt("castle --D 3 --L 4 --S 12 --N fog")
    assert (spec.seed, spec.guidance_scale, spec.steps, spec.negative) == (3, 4.0, 12, "fog")


def test_negative_runs_until_the_next_flag_and_may_hold_dashes() -> None:
    spec = parse_prompt("a city --n text, sign-post, well-lit --seed 1")
    assert spec.negative == "text, sign-post, well-lit" and spec.seed == 1
    assert parse_prompt("a--b c").prompt == "a--b c"


def test_sdxl_second_prompts_go_to_extras() -> None:
    spec = parse_prompt("a cat --p2 oil painting --n2 photo")
    assert spec.extras == {"prompt_2": "oil painting", "negative_prompt_2": "photo"}


def test_lora_tags_are_collected_and_removed() -> None:
    spec = parse_prompt("<lora:style:0.6> a cat, <lora:detail> sitting <lora:bad:-1.5>, <LORA:big:2> --n ugly <lora:neg:0.3>")
    assert spec.prompt == "a cat, sitting"
    assert spec.loras == [("style", 0.6), ("detail", 1.0), ("bad", -1.5), ("big", 2.0), ("neg", 0.3)]
    assert spec.negative == "ugly" and "<lora:style:0.6>" in spec.source


def test_a1111_third_field_is_ignored() -> None:
    assert parse_prompt("x <lora:a:0.5:0.2>").loras == [("a", 0.5)]


@pytest.mark.parametrize("line, message", [
    ("cat --ar 16:9", "unknown flag --ar"),
    ("cat --w wide", "--w needs a whole number"),
    ("cat --cfg high", "--cfg needs a number"),
    ("cat <lora:x:strong>", "not a number"),
])
def test_mistakes_are_errors(line: str, message: str) -> None:
    with pytest.raises(EaselError, match=message):
        parse_prompt(line)


@given(st.text(alphabet=st.characters(categories=("L", "N", "Zs")), min_size=1).filter(str.strip),
       st.integers(1, 4096), st.integers(0, 2**31))
def test_flags_round_trip(prompt: str, width: int, seed: int) -> None:
    spec = parse_prompt(f"{prompt} --w {width} --seed {seed}")
    assert spec.width == width and spec.seed == seed
    assert spec.prompt == " ".join(prompt.split())


def test_read_prompts_from_list_and_file(tmp_path: Path) -> None:
    assert read_prompts(["a", "  ", "b --seed 1"]) == ["a", "b --seed 1"]
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\nfirst one\n\nsecond --n bad\n", encoding="utf-8")
    assert read_prompts(str(path)) == ["first one", "second --n bad"]
    with pytest.raises(EaselError, match="not a file"):
        read_prompts(str(tmp_path / "missing.txt"))
