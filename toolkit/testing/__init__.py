"""Test support shipped with easel: tiny random models that load through the real loading code."""
