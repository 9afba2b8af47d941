"""Tests inside architecture folders (``extensions/<arch>/test_<arch>.py``) get the settings of tests/conftest.py
(offline, tiny models in a temporary cache) and its session ``registry`` fixture."""

from tests.conftest import registry  # noqa: F401  (importing it applies the settings)
