"""Config blocks of structure-keeping generation: ControlNets with their control-image preprocessing, and IP-Adapters.

Shared by the generate job (``generate.controlnets`` / ``generate.ip_adapter``), training previews
(``sample.controlnets`` with ``samples[].ctrl_img``) and the evaluate job's variants.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from toolkit.config.base import Block, lowercase
from toolkit.control.names import MODEL_PREPROCESSORS, PREPROCESSORS

PreprocessName = lowercase(Literal[PREPROCESSORS])  # type: ignore[valid-type]


class PreprocessConfig(Block):
    """How the control image is made from its source image (``preprocess: canny`` is short for ``{type: canny}``)."""

    block_name: ClassVar[str] = "preprocess"

    type: PreprocessName = "none"
    """none (the image as it is), canny, softedge, lineart, grayscale, tile (blurred downscale), depth or pose (both
    need ``model``). All but depth and pose run offline on the image's pixels."""
    low_threshold: int = Field(100, ge=0)
    """canny: gradient strength under which a pixel is no edge (OpenCV's and A1111's Threshold A: Sobel |gx| + |gy|
    of 0-255 pixels); pixels between the thresholds are edges only where they join a strong one."""
    high_threshold: int = Field(200, ge=0)
    """canny: gradient strength from which a pixel is an edge (A1111's Threshold B)."""
    blur: float = Field(1.0, ge=0)
    """canny, softedge, lineart: sigma in pixels of the Gaussian blur before the gradients (0: none)."""
    downscale: int = Field(8, ge=1)
    """tile: the image is shrunk by this factor and blown up again (what tile ControlNets expect)."""
    model: str | None = None
    """depth: a depth-estimation model (hub id or folder, e.g. depth-anything/Depth-Anything-V2-Small-hf); pose: a
    VitPose model (e.g. usyd-community/vitpose-base-simple). Other types take none."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> "PreprocessConfig":
        if self.low_threshold > self.high_threshold:
            raise ValueError(f"low_threshold ({self.low_threshold}) is above high_threshold ({self.high_threshold})")
        if self.type in MODEL_PREPROCESSORS and not self.model:
            raise ValueError(f"preprocess type '{self.type}' needs model: a {self.type} model's hub id or folder "
                             f"(e.g. {MODEL_PREPROCESSORS[self.type]})")
        if self.model and self.type not in MODEL_PREPROCESSORS:
            raise ValueError(f"preprocess type '{self.type}' takes no model (only {', '.join(MODEL_PREPROCESSORS)} do)")
        return self


class ControlNetConfig(Block):
    """One ControlNet: the model, its control image (and how that is made), and how strongly it steers."""

    block_name: ClassVar[str] = "controlnets[]"

    path: str
    """The ControlNet: a hub id (owner/name), a diffusers folder, or a single .safetensors file (local or a hub file
    owner/repo/file.safetensors)."""
    config: str | None = None
    """Single files: a folder or hub id holding the ControlNet's config.json; default: diffusers' guess from the keys."""
    image: str | None = None
    """The control image: a file, or a folder (paired by file name with the init images). Default: the init image
    itself (generate, evaluate), the prompt's ``ctrl_img`` (training previews). Preprocessed at the output size."""
    preprocess: PreprocessConfig = PreprocessConfig()
    """How the control image is made from ``image`` (``preprocess: canny`` for short)."""
    scale: float = Field(1.0, ge=0)
    """How strongly it steers (diffusers' ``controlnet_conditioning_scale``)."""
    start: float = Field(0.0, ge=0, le=1)
    """Fraction of the steps after which it starts acting."""
    end: float = Field(1.0, ge=0, le=1)
    """Fraction of the steps after which it stops acting."""
    mode: int | str | None = None
    """Union ControlNets: the control mode, by name (e.g. canny, depth, openpose) or index; default: the preprocessor's."""

    @model_validator(mode="after")
    def _window(self) -> "ControlNetConfig":
        if self.start >= self.end:
            raise ValueError(f"start ({self.start:g}) must be below end ({self.end:g})")
        return self

    @field_validator("mode", mode="before")
    @classmethod
    def _lower_mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class IPAdapterConfig(Block):
    """An IP-Adapter: reference images whose look (style, subject) steers the image, next to the prompt."""

    block_name: ClassVar[str] = "ip_adapter"

    path: str
    """The IP-Adapter weights: a .safetensors file, local or a hub file (e.g.
    h94/IP-Adapter/models/ip-adapter_sd15.safetensors); pickle .bin files are refused."""
    image_encoder: str | None = None
    """Its CLIP image encoder: a folder, a hub id, or owner/repo/subfolder; default: ``image_encoder/`` beside the
    weights file (diffusers' layout, e.g. h94/IP-Adapter/models/image_encoder)."""
    images: list[str] | str
    """Reference images: a file, a list of files, or a folder; several images are used together."""
    scale: float = Field(0.6, ge=0)
    """How strongly the reference images steer (0: not at all; diffusers' ``set_ip_adapter_scale``)."""
