"""Dataset preparation: filters, dedupe, resize, caption formats, tagging and auto-captioning."""
