"""Qwen-Image (Qwen): text-to-image (``qwen_image``, variant ``2512``) and the edit models (``qwen_image_edit``;
``qwen_image_edit_plus``, variants ``2509`` and ``2511``). ``spec.py`` (the architectures as data), ``adapter.py``
(text-to-image), ``edit.py`` (the edit models), ``tiny.py`` (their tiny models), ``test_qwen_image.py``,
``test_qwen_image_edit.py``."""

from extensions.qwen_image.spec import EDIT_PLUS_SPEC, EDIT_SPEC, SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="qwen_image", description="Qwen-Image MMDiT with a Qwen2.5-VL text encoder, trained with flow "
                      "matching; the Edit models condition on reference images.",
                      architectures=(SPEC, EDIT_SPEC, EDIT_PLUS_SPEC))
