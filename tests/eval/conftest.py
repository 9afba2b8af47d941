"""Tiny CLIP, built once per session."""

from tests.tiny_transformers import tiny_clip  # noqa: F401
