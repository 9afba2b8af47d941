"""Drop-in plugins. Each package declares ``EXTENSION = toolkit.registry.Extension(...)`` in its __init__.py."""
