"""FLUX.1 (dev, schnell) and FLUX.1 Kontext: ``spec.py`` (the architectures as data), ``adapter.py``, ``tiny.py``
(``tiny:flux``, ``tiny:flux_kontext``), ``test_flux.py``."""

from extensions.flux.spec import KONTEXT, SPEC
from toolkit.registry import Extension

EXTENSION = Extension(name="flux", description="FLUX.1 dev / schnell and FLUX.1 Kontext (edit pairs): double/single-stream "
                      "DiT with T5-XXL and CLIP-L text encoders, trained with flow matching.", architectures=(SPEC, KONTEXT))
