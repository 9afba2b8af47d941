"""Adding a trigger word or style tag exactly once."""

import pytest

from toolkit.data.captions import contains_phrase
from toolkit.prep.tagging import add_tag


@pytest.mark.parametrize("caption,position,expected", [
    ("a portrait of a woman", "prefix", "anistyle, a portrait of a woman"),
    ("a portrait of a woman", "suffix", "a portrait of a woman, anistyle"),
    ("anistyle, a portrait", "prefix", "anistyle, a portrait"),
    ("a portrait by ANISTYLE", "prefix", "a portrait by ANISTYLE"),
    ("", "prefix", "anistyle"),
    (None, "suffix", "anistyle"),
    ("  spaced caption \n", "suffix", "spaced caption, anistyle"),
])
def test_add_tag(caption, position, expected):
    assert add_tag(caption, "anistyle", position) == expected


def test_tag_is_added_once_when_applied_twice():
    once = add_tag("a girl reading a book", "drawn by KSH drawing style", "suffix")
    assert once == "a girl reading a book, drawn by KSH drawing style"
    assert add_tag(once, "drawn by KSH drawing style", "suffix") == once
    assert add_tag(once, "drawn by KSH drawing style", "prefix") == once


def test_whole_words_only():
    assert not contains_phrase("ohwxman standing", "ohwx")
    assert add_tag("ohwxman standing", "ohwx") == "ohwx, ohwxman standing"
    assert contains_phrase("a photo of <springwc> style", "<springwc>")
    assert contains_phrase("Drawn  by\nksh drawing style", "drawn by KSH drawing style")


def test_custom_separator():
    assert add_tag("a cat", "wcstyle", "prefix", separator=" ") == "wcstyle a cat"
