"""FLUX.2 [dev] and [klein] 4B / 9B: ``spec.py`` (the architectures as data), ``adapter.py``, ``tiny.py``
(``tiny:flux2_klein_4b``, ``tiny:flux2_klein_9b``), ``test_flux2.py``."""

from extensions.flux2.spec import KLEIN_4B, KLEIN_9B, SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="flux2", description="FLUX.2 [dev] (Mistral text encoder) and [klein] 4B / 9B (Qwen3): a DiT on a "
                      "32-channel VAE with several reference images, trained with flow matching.",
                      architectures=(SPEC, KLEIN_4B, KLEIN_9B))
