"""A1111's generation parameters text, written into images and read back.

The text is what AUTOMATIC1111's web UI stores in a PNG ``parameters`` text chunk (and in a JPEG's
or WebP's EXIF UserComment), so its "PNG Info" tab, ComfyUI, Civitai and other tools show it::

    a photo of a cat
    Negative prompt: blurry, text
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: my-model

A value holding ``,``, ``:`` or a newline is written as a JSON string, as A1111 does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

PARAMETERS_KEY = "parameters"
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_UNICODE = b"UNICODE\x00"


def quote(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text
    return text


def model_label(name_or_path: str) -> str:
    """How the metadata names a model: a file's stem, else the last part of a folder or hub id."""
    name = name_or_path.rstrip("/")
    return Path(name).stem if Path(name).suffix else name.split("/")[-1]


def format_parameters(prompt: str, negative: str, params: dict[str, Any]) -> str:
    """The parameters text: prompt, ``Negative prompt:`` line (when there is one), then ``Key: value, ...``."""
    line = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{line}".strip()


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, parameters) from a parameters text, read the way A1111 reads it."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    params = {key.strip(): unquote(value.strip()) for key, value in _PARAM.findall(last)}
    return "\n".join(prompt), "\n".join(negative), params


def save_image(image: "Image.Image", path: Path, parameters: str | None, ext: str | None = None) -> None:
    """Save ``image`` as ``ext`` (default: from the suffix) with ``parameters`` embedded where the format allows."""
    from PIL import Image, PngImagePlugin

    suffix = "." + (ext or path.suffix).lower().lstrip(".")
    if suffix == ".png":
        info = PngImagePlugin.PngInfo()
        if parameters:
            info.add_text(PARAMETERS_KEY, parameters)
        image.save(path, format="PNG", pnginfo=info)
        return
    exif = Image.Exif()
    if parameters:
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE + parameters.encode("utf-16-be")
    kind = "JPEG" if suffix in (".jpg", ".jpeg") else "WEBP"
    image.convert("RGB").save(path, format=kind, exif=exif, quality=95)


def read_parameters(path: Path) -> str | None:
    """The parameters text stored in an image by ``save_image`` (or by A1111), if any."""
    from PIL import Image

    with Image.open(path) as image:
        if PARAMETERS_KEY in image.info:
            return str(image.info[PARAMETERS_KEY])
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(raw, bytes):
        if raw.startswith(_UNICODE):
            return raw[len(_UNICODE):].decode("utf-16-be")
        return raw[8:].decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else None
