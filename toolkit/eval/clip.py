"""CLIP embeddings of images and prompts (transformers CLIPModel + its processor)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import EaselError

if TYPE_CHECKING:
    import torch
    from PIL import Image


def _features(output: Any) -> "torch.Tensor":
    """``get_*_features`` returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


LABEL = "the CLIP model"


def check_clip_model(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Fail early (before any image is generated) unless ``name_or_path`` names a loadable CLIP model.

    Returns what ``from_pretrained`` loads and its options (``toolkit.models.hub.pretrained_location``).
    """
    from transformers import AutoConfig, CLIPConfig

    from toolkit.models.hub import load_error, pretrained_location

    source, options = pretrained_location(name_or_path, "clip_model", LABEL, tiny="tiny:clip")
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError) as err:
        raise load_error("clip_model", LABEL, name_or_path, source, err, tiny="tiny:clip") from None
    if not isinstance(config, CLIPConfig):
        raise EaselError(f"clip_model '{name_or_path}' is a '{config.model_type}' model, not CLIP; both metrics need a "
                         "transformers CLIPModel, e.g. openai/clip-vit-large-patch14, tiny:clip or a folder saved from one.")
    return source, options


class ClipEmbedder:
    """A CLIP model from a hub id, a local folder or ``tiny:clip``, giving unit-length embeddings as numpy arrays."""

    def __init__(self, name_or_path: str, *, device: "torch.device", dtype: "torch.dtype", batch_size: int = 16):
        from transformers import AutoProcessor, CLIPModel

        from toolkit.models.hub import load_error

        source, options = check_clip_model(name_or_path)
        try:
            self.model = CLIPModel.from_pretrained(source, **options).to(device=device, dtype=dtype).eval()
            self.processor = AutoProcessor.from_pretrained(source, **options)
        except (OSError, ValueError) as err:
            raise load_error("clip_model", LABEL, name_or_path, source, err, tiny="tiny:clip") from None
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    def _run(self, items: list[Any], embed: Any) -> np.ndarray:
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                features = _features(embed(items[start:start + self.batch_size])).float()
                chunks.append(torch.nn.functional.normalize(features, dim=-1).cpu().numpy())
        return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, self.model.config.projection_dim))

    def images(self, images: "list[Image.Image]") -> np.ndarray:
        """Unit-length image embeddings, one row per image."""
        def embed(batch: "list[Image.Image]") -> Any:
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
            return self.model.get_image_features(pixel_values=pixels)

        return self._run(images, embed)

    def image_files(self, paths: list[Path]) -> tuple[np.ndarray, list[str]]:
        """Embeddings of the readable files (read one batch at a time), and ``name (reason)`` of the others."""
        from toolkit.data.images import BadImage, load_image

        chunks, skipped = [], []
        for start in range(0, len(paths), self.batch_size):
            images = []
            for path in paths[start:start + self.batch_size]:
                try:
                    images.append(load_image(path))
                except BadImage as err:
                    skipped.append(f"{path.name} ({err.reason})")
            chunks.append(self.images(images))
        return (np.concatenate(chunks) if chunks else self.images([])), skipped

    def texts(self, texts: list[str]) -> np.ndarray:
        """Unit-length text embeddings, one row per text (truncated to the model's context length)."""
        def embed(batch: list[str]) -> Any:
            tokens = self.processor(text=batch, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens)
            return self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                attention_mask=tokens["attention_mask"].to(self.device))

        return self._run(texts, embed)
