"""Add a trigger word or style tag to a caption, exactly once."""

from __future__ import annotations

from toolkit.data.captions import contains_phrase


def add_tag(caption: str | None, tag: str, position: str = "prefix", separator: str = ", ") -> str:
    """``tag`` + separator + caption (or caption + separator + tag); unchanged when the tag is already there.

    An empty or missing caption becomes the tag alone.
    """
    tag = tag.strip()
    text = (caption or "").strip()
    if not tag or contains_phrase(text, tag):
        return text
    if not text:
        return tag
    return f"{tag}{separator}{text}" if position == "prefix" else f"{text}{separator}{tag}"
