"""The UNet family (SD 1.x, SDXL): a ``UNet2DConditionModel`` denoiser with CLIP text encoders, DDPM training.

``spec.py`` holds the facts both specs share (samplers, noise schedules, the LoRA naming), ``sgm.py`` the
SGM / LDM module names other tools use for the UNet, ``ldm.py`` the original single-file checkpoint layout,
``adapter.py`` the adapter code both share (``UNetAdapter``), ``tiny.py`` what their tiny models share.
"""
