"""Model loading and the ModelAdapter contract (base.py) that every architecture implements."""
