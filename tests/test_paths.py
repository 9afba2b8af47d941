"""toolkit.paths: one safe segment per name, every join proven to stay under its root."""

import os

import pytest
from hypothesis import given, strategies as st

from toolkit.errors import EaselError
from toolkit.paths import is_under, safe_child, segment_problem, under


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../x", "a\\b", "/abs", "x\n", " lead", "trail "])
def test_unsafe_names_are_refused(tmp_path, name):
    assert segment_problem(name) is not None
    with pytest.raises(EaselError):
        safe_child(tmp_path, name, "config.name")


@pytest.mark.parametrize("name", ["run", "my run", "v1.2", "ünïcode", "a..b", ".hidden"])
def test_plain_names_pass(tmp_path, name):
    assert safe_child(tmp_path, name) == tmp_path / name


def test_under_refuses_escapes_and_absolute_parts(tmp_path):
    assert under(tmp_path, "a", "b.png") == tmp_path / "a" / "b.png"
    with pytest.raises(EaselError, match="outside"):
        under(tmp_path, "a", "..", "..", "x")
    with pytest.raises(EaselError, match="absolute"):
        under(tmp_path, "/etc/passwd")


def test_a_symlink_out_of_the_root_is_outside(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "link")
    assert not is_under(root, root / "link" / "file")
    with pytest.raises(EaselError):
        under(root, "link", "file")


@given(st.text(min_size=1, max_size=20))
def test_any_accepted_name_stays_under_the_root(name):
    root = os.path.realpath("/tmp/easel-paths-root")
    if segment_problem(name) is None:
        path = safe_child(root, name)
        assert os.path.dirname(os.path.realpath(path)) == root


def test_names_as_written_ignore_links_but_not_dotdot(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "link")
    assert is_under(root, root / "link" / "file", follow_links=False)
    assert not is_under(root, root / "a" / ".." / ".." / "x", follow_links=False)
    assert not is_under(root, "/etc/passwd", follow_links=False)
