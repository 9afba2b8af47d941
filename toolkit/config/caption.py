"""Config of the caption job's ``image_to_text`` process: auto-captioning with a vision-language model."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field

from toolkit.config.base import Block, Precision
from toolkit.config.base import CaptionExt


class CaptionProcessConfig(Block):
    """Write a caption file next to each image of a folder, made by an image-to-text model."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["image_to_text"]
    """Process type."""
    folder_path: str
    """Folder of images, listed as training lists it (subfolders included; hidden files and folders and ``_latent_cache`` skipped); captions are written next to the images."""
    model: str = Field(validation_alias=AliasChoices("model", "model_name_or_path", "name_or_path"))
    """A hub id or local folder of a transformers image-to-text model: BLIP (Salesforce/blip-image-captioning-large), BLIP-2 (Salesforce/blip2-opt-2.7b), Florence-2 (florence-community/Florence-2-large), or another model that AutoModelForImageTextToText loads; ``tiny:blip``, ``tiny:blip2``, ``tiny:florence2`` are tiny random ones built in code (offline; random words)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model."""
    trust_remote_code: bool = False
    """Run the model repository's own code; needed for repositories in their original, pre-transformers layout (e.g. microsoft/Florence-2-large). Only for repositories you trust."""
    prompt: str | None = None
    """Text the caption is conditioned on: BLIP continues it ("a photography of"), BLIP-2 answers it ("Question: describe the image. Answer:"), Florence-2 takes a task token ("<MORE_DETAILED_CAPTION>", the default for Florence-2). Unset: unconditional captioning."""
    keep_prompt: bool = False
    """Keep the prompt's words at the start of the caption (BLIP's "a photography of ..."); otherwise only the model's continuation is kept."""
    batch_size: int = Field(8, ge=1)
    """Images captioned together."""
    max_new_tokens: int = Field(40, ge=1, validation_alias=AliasChoices("max_new_tokens", "max_length"))
    """Longest caption, in tokens (``max_length`` is accepted too)."""
    num_beams: int = Field(1, ge=1)
    """Beam search width (3 to 5 gives BLIP longer, more careful captions; 1 is greedy and fastest)."""
    generate_kwargs: dict[str, Any] = {}
    """Extra arguments for the model's ``generate`` (min_new_tokens, repetition_penalty, do_sample, ...)."""
    prefix: str = ""
    """Added at the start of every caption (a trigger word such as ``anistyle``), unless the caption already has it."""
    suffix: str = ""
    """Added at the end of every caption (a style tag such as ``drawn by KSH drawing style``), unless the caption already has it."""
    separator: str = ", "
    """Text between the prefix / suffix and the caption."""
    overwrite: bool = False
    """Re-caption images that already have a non-empty caption file; by default they are left alone (an empty one counts as none). Images captioned by a metadata.jsonl/csv row are never re-captioned (training reads that text first)."""
    caption_ext: CaptionExt = "txt"
    """Extension of the caption files."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    dtype: Precision | None = None
    """Precision of the model; default fp16 on CUDA, fp32 elsewhere."""
