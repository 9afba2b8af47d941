"""Stable Diffusion XL: ``spec.py`` (the architecture as data), ``adapter.py``, ``tiny.py`` (``tiny:sdxl``),
``test_sdxl.py``; the UNet family's shared code is ``families/unet``."""

from extensions.sdxl.spec import SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="sdxl", description="Stable Diffusion XL base models.", architectures=(SPEC,))
