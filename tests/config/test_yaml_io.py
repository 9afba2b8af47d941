import pytest

from toolkit.config.yaml_io import load_text
from toolkit.errors import ConfigError


def test_positions_of_keys_and_items():
    data, locations = load_text("a: 1\nb:\n  c: [x, {d: 2}]\n", "t.yaml")
    assert data == {"a": 1, "b": {"c": ["x", {"d": 2}]}}
    assert locations.points[("a",)] == (1, 1)
    assert locations.points[("b", "c")] == (3, 3)
    assert locations.points[("b", "c", 1, "d")] == (3, 11)


def test_nearest_ancestor_position_for_missing_key():
    _, locations = load_text("a:\n  b: 1\n", "t.yaml")
    assert locations.find(("a", "missing", "deeper")) == (1, 1)


def test_scalars_are_typed_and_timestamps_stay_text():
    data, _ = load_text("lr: 1e-4\non: yes\nn: null\nd: 2026-01-01\nh: 0x10\nt: true\n", "t.yaml")
    assert data == {"lr": 1e-4, "on": "yes", "n": None, "d": "2026-01-01", "h": 16, "t": True}


def test_merge_keys_fill_only_unset_keys():
    data, _ = load_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "t.yaml")
    assert data["use"] == {"x": 1, "y": 3}


def test_duplicate_key_names_both_lines():
    with pytest.raises(ConfigError) as caught:
        load_text("a: 1\nb: 2\na: 3\n", "t.yaml")
    assert "line 3, col 1: a: duplicate key 'a' (first set on line 1)" in str(caught.value)


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/name:os.system", "!custom"])
def test_non_standard_tags_are_refused(tag):
    with pytest.raises(ConfigError, match="is not allowed"):
        load_text(f"a: {tag} [ls]\n", "t.yaml")


def test_syntax_error_names_the_line():
    with pytest.raises(ConfigError) as caught:
        load_text("a: 1\nb: [1, 2\nc: 3\n", "t.yaml")
    assert "YAML syntax error" in str(caught.value) and "line 3" in str(caught.value)


def test_json_is_read_with_positions():
    data, locations = load_text('{"a": {"b": 1}}', "t.json")
    assert data == {"a": {"b": 1}} and locations.points[("a", "b")] == (1, 8)
