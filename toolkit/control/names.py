"""The control-image preprocessors by name (what configs may say), apart from their code so configs import nothing."""

MODEL_PREPROCESSORS = {"depth": "depth-anything/Depth-Anything-V2-Small-hf", "pose": "usyd-community/vitpose-base-simple"}
"""Preprocessors that run a model (``toolkit.control.estimators``) -> an example of one (hub id)."""
PREPROCESSORS = ("none", "canny", "softedge", "lineart", "grayscale", "tile", *MODEL_PREPROCESSORS)
"""Every preprocessor; all but those in ``MODEL_PREPROCESSORS`` are image ops (``toolkit.control.preprocess``)."""
