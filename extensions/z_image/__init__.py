"""Z-Image (Tongyi-MAI): Turbo, base, and de-turbo variants. ``spec.py`` (the architecture as data),
``adapter.py``, ``original.py`` (the original single-file layout), ``tiny.py`` (``tiny:zimage``), ``test_zimage.py``."""

from extensions.z_image.spec import SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="z_image", description="Z-Image single-stream DiT with a Qwen3 text encoder, trained with flow matching.",
                      architectures=(SPEC,))
