import pytest

from toolkit.config.substitute import apply_overrides, parse_override, substitute_env, substitute_tags
from toolkit.config.yaml_io import load_text
from toolkit.errors import ConfigError


def test_env_substitution_and_default():
    data, locations = load_text("a: ${HOME_X}/x\nb: ${NOPE:-fallback}\n", "t.yaml")
    assert substitute_env(data, locations, {"HOME_X": "/h"}) == {"a": "/h/x", "b": "fallback"}


def test_missing_env_variable_is_an_error_naming_it_and_its_line():
    data, locations = load_text("a: 1\nb: ${MISSING_VAR}\n", "t.yaml")
    with pytest.raises(ConfigError) as caught:
        substitute_env(data, locations, {})
    assert "line 2" in str(caught.value) and "'MISSING_VAR' is not set" in str(caught.value)


def test_name_everywhere_and_trigger_per_process():
    data = {"config": {"name": "[name]", "process": [
        {"trigger_word": "sks", "sample": {"prompts": ["[trigger] dog in [name]"]}},
        {"sample": {"prompts": ["[trigger] cat"]}},
    ]}, "meta": {"name": "[name]"}}
    out = substitute_tags(data, "run1")
    assert out["config"]["name"] == "run1" and out["meta"]["name"] == "run1"
    assert out["config"]["process"][0]["sample"]["prompts"] == ["sks dog in run1"]
    assert out["config"]["process"][1]["sample"]["prompts"] == ["[trigger] cat"]


@pytest.mark.parametrize("text,path,value", [
    ("config.process.0.train.lr=2e-4", ("config", "process", 0, "train", "lr"), 2e-4),
    ("a.b=true", ("a", "b"), True),
    ("a.b=[512, 768]", ("a", "b"), [512, 768]),
    ("a.b=hello world", ("a", "b"), "hello world"),
    ("a.b=", ("a", "b"), ""),
])
def test_override_values_are_typed(text, path, value):
    assert parse_override(text) == (path, value)


def test_overrides_set_nested_values_and_list_items():
    data, locations = load_text("config:\n  process:\n    - train: {lr: 1}\n", "t.yaml")
    apply_overrides(data, ["config.process.0.train.lr=0.5", "config.process.0.network.linear=8"], locations)
    assert data["config"]["process"][0] == {"train": {"lr": 0.5}, "network": {"linear": 8}}
    assert locations.issue(("config", "process", 0, "train", "lr"), "bad").message.endswith("(from --set config.process.0.train.lr=0.5)")


@pytest.mark.parametrize("text,fragment", [
    ("noequals", "is not KEY=VALUE"),
    ("config.process.3.train.lr=1", "index 3 is not in the list of 1"),
    ("config.name.x=1", "is a value, not a block"),
])
def test_bad_overrides_are_clear_errors(text, fragment):
    data, locations = load_text("config:\n  name: n\n  process:\n    - {}\n", "t.yaml")
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(data, [text], locations)
