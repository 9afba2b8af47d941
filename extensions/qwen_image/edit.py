"""Qwen-Image-Edit (one reference image) and Qwen-Image-Edit-Plus (2509 / 2511: up to three), on the reference-image
contract of ``toolkit.models.base``.

What the edit pipelines do (diffusers' QwenImageEditPipeline / QwenImageEditPlusPipeline), and so the adapters too:
- each reference is encoded by the VAE at its own aspect ratio at one megapixel (``spec.EDIT_REFERENCES``: the data
  layer fits training references so), packed into tokens like the target and appended after the target's tokens;
  ``img_shapes`` lists the target's grid then each reference's, and only the target's tokens of the output are kept;
- the text encoder reads the references too, through Qwen2.5-VL's vision tower: Edit puts the image (the same
  megapixel one) into its prompt template; Edit-Plus writes ``Picture i: <vision tokens>`` per reference before the
  prompt, each image at 384 x 384 pixels of area. The prompt rows then hold the vision tokens as well, hence the
  longer ``max_sequence_length`` (2048 for Edit, 1024 for Edit-Plus; a longer row is an error, not cut);
- 2511's transformer has ``zero_cond_t``: the reference tokens are modulated as at timestep 0 (from ``img_shapes``).

Prompts without reference images (previews without ``ctrl_img``, datasets without ``control_path``) are encoded and
sampled as Qwen-Image does (its template, QwenImagePipeline from the same components): the edit pipelines need an image.
The pipelines take one prompt per call; requests with references are made one at a time.

The processor: transformers 5 builds Qwen2VLProcessor's video half only with torchvision, which the edit pipelines
never use (they pass images), so the adapter puts the processor together from the model's tokenizer and its image
processor settings (``processor/preprocessor_config.json``, the PIL implementation), with or without torchvision.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from extensions.qwen_image.adapter import QwenImageAdapter
from toolkit.errors import EaselError
from toolkit.models.loading import hub_errors
from toolkit.models.pipeline_adapter import pixels_to_pil

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.config.blocks import ModelConfig
    from toolkit.models.base import Conditioning, GenerateRequest
    from toolkit.models.loading import ModelSource
    from toolkit.registry import ArchRef

REFERENCE_KEY = "reference_latents_{}"
"""Conditioning key of the i-th reference slot's latents (B, 16, h, w)."""
PICTURE = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"
"""How QwenImageEditPlusPipeline introduces each reference image in the prompt."""


class QwenImageEditAdapter(QwenImageAdapter):
    """Qwen-Image-Edit. Conditioning: Qwen-Image's ``prompt_embeds`` / ``prompt_mask`` (with the reference's vision
    tokens) and, in training, ``reference_latents_0`` (B, 16, h, w)."""

    default_base: ClassVar[str] = "Qwen/Qwen-Image-Edit"
    text_image_area: ClassVar[int | None] = None
    """Pixel area the text encoder sees each reference at (None: as the VAE does, Edit's one megapixel)."""

    @classmethod
    def load_pipeline(cls, source: "ModelSource", config: "ModelConfig", arch: "ArchRef", dtype: "torch.dtype",
                      components: dict[str, Any]) -> Any:
        """The pipeline, its processor put together here (see the module's docstring)."""
        base = source.path if source.kind != "file" else (source.config or cls.base_for(arch))
        return super().load_pipeline(source, config, arch, dtype, {**processor_parts(base, source.revision), **components})

    @property
    def max_sequence_length(self) -> int:
        """Prompt tokens kept per row, the reference's vision tokens included."""
        return int(self.config.model_kwargs.get("max_sequence_length", 2048))

    def text_pipeline(self) -> Any:
        return self.attachments.pipeline("QwenImagePipeline")

    def with_references(self, cond: "Conditioning", references: "list[torch.Tensor]") -> "Conditioning":
        return {**cond, **{REFERENCE_KEY.format(slot): latents for slot, latents in enumerate(references)}}

    def reference_latents(self, cond: "Conditioning") -> "list[torch.Tensor]":
        found = []
        while REFERENCE_KEY.format(len(found)) in cond:
            found.append(cond[REFERENCE_KEY.format(len(found))])
        return found

    def encode_prompts(self, prompts: list[str], references: "list[list[torch.Tensor]] | None" = None) -> "Conditioning":
        """Rows without reference images as Qwen-Image encodes them; rows with them as the edit pipeline does."""
        if not references or not any(references):
            return super().encode_prompts(prompts)
        return self.padded([self._edit_row(prompt, [self._text_image(pixels_to_pil(image[None])[0]) for image in images])
                            if images else self.text_rows([prompt])[0] for prompt, images in zip(prompts, references)])

    def _text_image(self, image: "Image.Image") -> "Image.Image":
        """A reference as the text encoder sees it (Edit-Plus: resized to its area, sides rounded to 32)."""
        if self.text_image_area is None:
            return image
        width, height = dimensions(self.text_image_area, image.width / image.height)
        return self.pipe.image_processor.resize(image, height, width)

    def _prompt_text(self, prompt: str, count: int) -> str:
        return self.pipe.prompt_template_encode.format(prompt)

    def _edit_row(self, prompt: str, images: "list[Image.Image]") -> "torch.Tensor":
        """One prompt with its reference images through the processor and the text encoder: the last hidden states
        of its tokens, minus the template's first ones (as the pipeline keeps them)."""
        pipe, device = self.pipe, self.device
        inputs = pipe.processor(text=[self._prompt_text(prompt, len(images))], images=images, padding=True,
                                return_tensors="pt").to(device)
        encoder = self.text_encoders["text_encoder"]
        hidden = encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                         output_hidden_states=True).hidden_states[-1][0]
        row = hidden[inputs["attention_mask"][0].bool()][pipe.prompt_template_encode_start_idx:]
        if len(row) > self.max_sequence_length:
            raise EaselError(f"a prompt with its reference image(s) is {len(row)} tokens, more than "
                             f"model.model_kwargs.max_sequence_length ({self.max_sequence_length}); raise it.")
        return row

    def pipeline_inputs(self, batch: "list[GenerateRequest]", generators: list[Any]) -> tuple[Any, dict[str, Any]]:
        """txt2img without reference images runs on Qwen-Image's own pipeline (the edit pipelines require them)."""
        first = batch[0]
        if first.references or first.init_image is not None or first.controls:
            return super().pipeline_inputs(batch, generators)
        return self.text_pipeline(), {"width": first.width, "height": first.height}

    def generate(self, requests: "list[GenerateRequest]") -> "list[Image.Image]":
        """Requests with reference images one at a time (the edit pipelines take one prompt per call)."""
        images: list[Image.Image] = []
        for group in _groups(requests):
            images += super().generate(group)
        return images

    def call_kwargs(self, batch: "list[GenerateRequest]") -> dict[str, Any]:
        kwargs = super().call_kwargs(batch)
        if not batch[0].references:
            return kwargs
        kwargs.pop("max_sequence_length")  # the edit pipelines keep every prompt token
        return {**kwargs, "image": self._pipeline_images(batch[0].references)}

    def _pipeline_images(self, references: "list[Image.Image]") -> Any:
        return references[0].convert("RGB")


class QwenImageEditPlusAdapter(QwenImageEditAdapter):
    """Qwen-Image-Edit-2509 / 2511: up to three references (``reference_latents_0..2``), each introduced in the prompt
    as ``Picture i``."""

    default_base: ClassVar[str] = "Qwen/Qwen-Image-Edit-2509"
    text_image_area: ClassVar[int | None] = 384 * 384

    @classmethod
    def base_for(cls, arch: "ArchRef") -> str:
        return f"Qwen/Qwen-Image-Edit-{arch.variant}"

    @property
    def max_sequence_length(self) -> int:
        return int(self.config.model_kwargs.get("max_sequence_length", 1024))

    def _prompt_text(self, prompt: str, count: int) -> str:
        return self.pipe.prompt_template_encode.format("".join(PICTURE.format(i + 1) for i in range(count)) + prompt)

    def _pipeline_images(self, references: "list[Image.Image]") -> Any:
        return [image.convert("RGB") for image in references]


def _groups(requests: "list[GenerateRequest]") -> "list[list[GenerateRequest]]":
    """Consecutive requests without reference images together; each one with references alone."""
    groups: list[list[GenerateRequest]] = []
    for request in requests:
        if not request.references and groups and not groups[-1][-1].references:
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups


def dimensions(area: int, ratio: float) -> tuple[int, int]:
    """(width, height) of ``area`` pixels at ``ratio`` = width / height, rounded to multiples of 32 (the pipelines')."""
    width = math.sqrt(area * ratio)
    return round(width / 32) * 32, round(width / ratio / 32) * 32


def processor_parts(base: str, revision: str | None) -> dict[str, Any]:
    """The ``processor`` (and the ``tokenizer`` it shares) of the edit model at ``base`` (a diffusers folder or hub id)."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    local = Path(base).is_dir()
    with hub_errors("model.name_or_path", base):
        tokenizer = Qwen2Tokenizer.from_pretrained(base, subfolder="tokenizer", revision=None if local else revision)
        images = Qwen2VLImageProcessorPil.from_pretrained(base, subfolder="processor", revision=None if local else revision)
    return {"tokenizer": tokenizer, "processor": images_only_processor(tokenizer, images)}


def images_only_processor(tokenizer: Any, image_processor: Any) -> Any:
    """A Qwen2VLProcessor for text and images (no video processor), as its constructor would make it. It saves what
    it has (the image settings and the tokenizer, what ``processor_parts`` reads back), so the pipeline can be
    written as a diffusers folder."""
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor.__new__(Qwen2VLProcessor)
    processor.chat_template = None
    processor.tokenizer, processor.image_processor, processor.video_processor = tokenizer, image_processor, None
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = tokenizer.convert_tokens_to_ids(processor.video_token)
    processor.save_pretrained = partial(_save_images_only, processor)
    return processor


def _save_images_only(processor: Any, folder: "str | Path", **kwargs: Any) -> None:
    processor.image_processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
