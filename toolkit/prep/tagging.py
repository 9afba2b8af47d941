"""Add a trigger word or style tag to a caption, exactly once."""

from __future__ import annotations

import re


def has_tag(caption: str, tag: str) -> bool:
    """Whether ``tag`` occurs in ``caption`` as whole words, ignoring case and runs of spaces."""
    words = [re.escape(word) for word in tag.split()]
    if not words:
        return True
    pattern = r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"
    return re.search(pattern, caption, flags=re.IGNORECASE) is not None


def add_tag(caption: str | None, tag: str, position: str = "prefix", separator: str = ", ") -> str:
    """``tag`` + separator + caption (or caption + separator + tag); unchanged when the tag is already there.

    An empty or missing caption becomes the tag alone.
    """
    tag = tag.strip()
    text = (caption or "").strip()
    if not tag or has_tag(text, tag):
        return text
    if not text:
        return tag
    return f"{tag}{separator}{text}" if position == "prefix" else f"{text}{separator}{tag}"
