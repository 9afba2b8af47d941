"""Stable Diffusion 1.x (and fine-tunes such as Anything-V5): ``spec.py`` (the architecture as data),
``adapter.py``, ``tiny.py`` (``tiny:sd15``), ``test_sd15.py``; the UNet family's shared code is ``families/unet``."""

from extensions.sd15.spec import SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="sd15", description="Stable Diffusion 1.x UNet models.", architectures=(SPEC,))
