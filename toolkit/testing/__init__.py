"""Test support shipped with easel: the pieces tiny models are built from (``tiny.py``), the shared adapter suite
every architecture passes (``adapter_suite.py``, needs pytest), the demo dataset and the fitted tiny VAEs."""
