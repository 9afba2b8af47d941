"""Auto-captioning with transformers image-to-text models (BLIP, BLIP-2, Florence-2, ...).

Every such model has the same interface: a processor turns images (and an optional prompt) into
tensors, ``model.generate`` makes token ids, the processor decodes them. The model class comes
from transformers' auto classes (``AutoModelForImageTextToText``; ``AutoModelForVision2Seq`` on
older transformers; ``AutoModelForCausalLM`` for remote-code repositories such as the original
microsoft/Florence-2-* ones). Nothing here knows a model family beyond its default prompt.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from toolkit.errors import EaselError

if TYPE_CHECKING:
    import torch
    from PIL import Image

AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM")
DEFAULT_PROMPTS = {"florence2": "<MORE_DETAILED_CAPTION>"}
"""Model types that cannot caption without a prompt, and the prompt they get by default."""


def _model_class(config: Any, trust_remote_code: bool) -> Any:
    """The first auto class that knows this config (or that the repository's own code provides)."""
    import transformers

    remote = getattr(config, "auto_map", None) or {}
    for name in AUTO_CLASSES:
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        if (trust_remote_code and name in remote) or type(config) in auto._model_mapping:
            return auto
    raise EaselError(f"'{type(config).__name__}' (model_type '{getattr(config, 'model_type', '?')}') is not an image-to-text "
                     "model that transformers can generate captions with; use BLIP, BLIP-2, Florence-2 or another model "
                     "that AutoModelForImageTextToText loads (remote-code repositories need trust_remote_code: true).")


def _dtype_option(dtype: "torch.dtype") -> dict[str, Any]:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


@dataclass
class ImageAndTokenizer:
    """A processor for repositories that ship an image processor and a tokenizer but no processor class.

    VisionEncoderDecoder checkpoints (nlpconnect/vit-gpt2-image-captioning, ...) are like that:
    ``AutoProcessor`` then returns the tokenizer alone, which cannot read images.
    """

    image_processor: Any
    tokenizer: Any

    takes_prompt = False
    """It has no way to condition the caption on text."""

    def __call__(self, images: "list[Image.Image]", text: list[str] | None = None, return_tensors: str = "pt") -> Any:
        if text:
            raise ValueError("this model takes no prompt")
        return self.image_processor(images=images, return_tensors=return_tensors)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)


def _load_processor(name_or_path: str, options: dict[str, Any]) -> Any:
    """The model's processor; one put together from its image processor and tokenizer when it has none."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin

    processor = AutoProcessor.from_pretrained(name_or_path, **options)
    if isinstance(processor, ProcessorMixin):
        return processor
    return ImageAndTokenizer(AutoImageProcessor.from_pretrained(name_or_path, **options),
                             AutoTokenizer.from_pretrained(name_or_path, **options))


def load_captioning_model(name_or_path: str, *, device: "torch.device", dtype: "torch.dtype", revision: str | None = None,
                          trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, processor) from a hub id or a local folder, on ``device`` in ``dtype``, in eval mode."""
    from transformers import AutoConfig

    from toolkit.models.hub import load_error, pretrained_location

    source, extra = pretrained_location(name_or_path, "model", "the captioning model", revision, tiny="tiny:blip")
    options: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code, **extra}
    try:
        config = AutoConfig.from_pretrained(source, **options)
        model = _model_class(config, trust_remote_code).from_pretrained(source, config=config, **_dtype_option(dtype), **options)
        processor = _load_processor(source, options)
    except (OSError, ValueError) as err:
        raise load_error("model", "the captioning model", name_or_path, source, err, tiny="tiny:blip") from None
    return model.to(device).eval(), processor


def _strip_prompt(text: str, prompt: str) -> str:
    """``text`` with runs of whitespace collapsed, without a leading copy of ``prompt`` (compared case-insensitively)."""
    words, prompt_words = text.split(), prompt.split()
    head = [w.lower() for w in words[: len(prompt_words)]]
    if prompt_words and head == [w.lower() for w in prompt_words]:
        words = words[len(prompt_words):]
    return " ".join(words)


@dataclass
class Captioner:
    """A loaded model and processor, with the generation settings of one caption job."""

    model: Any
    processor: Any
    prompt: str | None = None
    keep_prompt: bool = False
    max_new_tokens: int = 40
    num_beams: int = 1
    generate_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt is None:
            self.prompt = DEFAULT_PROMPTS.get(getattr(self.model.config, "model_type", ""))

    def caption(self, images: "list[Image.Image]") -> list[str]:
        """One caption per image, whitespace tidied; the prompt is removed unless ``keep_prompt``."""
        import torch

        text = [self.prompt] * len(images) if self.prompt else None
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        if "token_type_ids" in inputs and "token_type_ids" not in inspect.signature(self.model.forward).parameters:
            del inputs["token_type_ids"]  # BERT tokenizers add them (GIT's); generate refuses what the model does not name
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                      **self.generate_kwargs)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and ids.shape[1] >= prompt_ids.shape[1] and torch.equal(ids[:, : prompt_ids.shape[1]], prompt_ids):
            ids = ids[:, prompt_ids.shape[1]:]
        decoded = self.processor.batch_decode(ids, skip_special_tokens=True)
        captions = [_strip_prompt(text, self.prompt or "") for text in decoded]
        if self.keep_prompt and self.prompt:
            captions = [f"{self.prompt.strip()} {caption}".strip() for caption in captions]
        return captions


def caption_images(captioner: Captioner, paths: "list[Path]", batch_size: int) -> "Iterator[tuple[Path, str | None, str]]":
    """Caption ``paths`` in batches, with a progress bar: yields (path, caption, "") or (path, None, why it failed)."""
    from tqdm.auto import tqdm

    from toolkit.data.images import BadImage, load_image

    with tqdm(total=len(paths), desc="captioning", unit="img") as progress:
        for start in range(0, len(paths), batch_size):
            batch, images = [], []
            for path in paths[start:start + batch_size]:
                try:
                    images.append(load_image(path))
                    batch.append(path)
                except BadImage as err:
                    yield path, None, err.reason
            if images:
                yield from ((path, caption, "") for path, caption in zip(batch, captioner.caption(images)))
            progress.update(len(paths[start:start + batch_size]))
