"""Code shared by a family of architectures, one package per family (``families/unet``: SD 1.x and SDXL).

Architecture folders under ``extensions/`` import their family; toolkit/ never does, and one extension never
imports another. Families are not extensions: discovery never looks here, and nothing is registered.
"""
