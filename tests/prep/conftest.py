"""Tiny captioning models and CLIP, built once per session."""

from tests.tiny_transformers import tiny_blip, tiny_blip2, tiny_clip, tiny_florence2, tiny_git, tiny_vit_gpt2  # noqa: F401
