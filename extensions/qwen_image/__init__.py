"""Qwen-Image (Qwen): text-to-image (``qwen_image``, variant ``2512``). ``spec.py`` (the architectures as data),
``adapter.py``, ``tiny.py`` (``tiny:qwen_image``), ``test_qwen_image.py``."""

from extensions.qwen_image.spec import SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="qwen_image", description="Qwen-Image MMDiT with a Qwen2.5-VL text encoder, trained with flow matching.",
                      architectures=(SPEC,))
