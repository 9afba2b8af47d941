"""Header metadata of saved LoRAs: kohya's ``ss_*`` fields, ``modelspec.*``, ``easel.*`` and the addnet hashes.

``ss_*`` are what AUTOMATIC1111 (and its Additional Networks extension) and Civitai read,
``modelspec.*`` is Stability AI's ModelSpec (architecture, title, trigger phrase, resolution), and
``sshs_model_hash`` / ``sshs_legacy_hash`` are kohya's precalculated hashes: the SHA-256 of the
tensor data of the file as it would be written with only its ``ss_*`` metadata (the bytes after
the header), and the first 8 hex digits of the SHA-256 of that file's bytes 0x100000-0x110000.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

    from toolkit.registry import LoraProfile

KNOWN_KEYS: dict[str, str] = {
    "name": "output name -> ss_output_name, modelspec.title",
    "base_model": "base model id or path -> ss_sd_model_name",
    "trigger_word": "-> modelspec.trigger_phrase, easel.trigger_word",
    "steps": "optimizer steps done -> ss_steps", "epoch": "-> ss_epoch",
    "resolution": "int, list of training resolutions (largest counts) or 'WxH' -> ss_resolution, modelspec.resolution",
    "num_train_images": "-> ss_num_train_images",
    "tag_frequency": "{dataset: {tag: count}} (or {tag: count}) -> ss_tag_frequency",
    "prediction_type": "epsilon / v_prediction -> modelspec.prediction_type (flow matching: omitted)",
    "learning_rate": "-> ss_learning_rate", "unet_lr": "-> ss_unet_lr", "text_encoder_lr": "-> ss_text_encoder_lr",
    "optimizer": "-> ss_optimizer", "lr_scheduler": "-> ss_lr_scheduler", "seed": "-> ss_seed",
    "network_type": "lora, locon, loha, lokr or dora -> ss_network_module / ss_network_args, easel.network_type",
    "rank": "linear rank -> ss_network_dim (default: from the tensors)", "alpha": "-> ss_network_alpha (default: from the tensors)",
    "conv_rank": "-> ss_network_args conv_dim", "conv_alpha": "-> ss_network_args conv_alpha",
    "dropout": "-> ss_network_dropout", "description": "-> ss_training_comment, modelspec.description",
    "author": "-> modelspec.author", "license": "-> modelspec.license", "tags": "-> modelspec.tags",
    "config": "the resolved run config (a mapping) -> easel.config (JSON)", "date": "ISO date -> modelspec.date (default: now)",
}
"""Keys of the ``metadata`` mapping ``save_lora`` understands, and where they go; others are kept as ``easel.<key>``."""
_SS_PLAIN = {"base_model": "ss_sd_model_name", "steps": "ss_steps", "epoch": "ss_epoch", "num_train_images": "ss_num_train_images",
             "learning_rate": "ss_learning_rate", "unet_lr": "ss_unet_lr", "text_encoder_lr": "ss_text_encoder_lr",
             "optimizer": "ss_optimizer", "lr_scheduler": "ss_lr_scheduler", "seed": "ss_seed", "dropout": "ss_network_dropout",
             "description": "ss_training_comment"}
_MODELSPEC_PLAIN = {"description": "modelspec.description", "author": "modelspec.author", "license": "modelspec.license",
                    "tags": "modelspec.tags"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _resolution(value: Any, defaults: Mapping[str, Any]) -> tuple[int, int] | None:
    """(width, height): an int is square, a list of training resolutions gives its largest, "WxH" is parsed."""
    if value is None:
        width, height = defaults.get("width"), defaults.get("height")
        return (int(width), int(height)) if width and height else None
    if isinstance(value, str) and "x" in value:
        width, _, height = value.partition("x")
        return int(width), int(height)
    side = int(max(value)) if isinstance(value, (list, tuple)) else int(value)
    return side, side


def network_fields(info: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, str]:
    """``ss_network_module/dim/alpha/args`` from the adapter's tensors (``info``) and the trainer's values."""
    kind = str(given.get("network_type") or ("dora" if info.get("dora") else info.get("network_type", "lora")))
    lycoris = kind in ("loha", "lokr", "dora")
    fields = {"ss_network_module": "lycoris.kohya" if lycoris else "networks.lora",
              "ss_network_dim": _number(float(given.get("rank", info.get("rank", info.get("conv_rank", 1))))),
              "ss_network_alpha": _number(float(given.get("alpha", info.get("alpha", info.get("conv_alpha", 1)))))}
    args: dict[str, str] = {}
    if "conv_rank" in info or "conv_rank" in given:
        args["conv_dim"] = _number(float(given.get("conv_rank", info.get("conv_rank", 0))))
        args["conv_alpha"] = _number(float(given.get("conv_alpha", info.get("conv_alpha", 0))))
    if lycoris:
        args["algo"] = "lora" if kind == "dora" else kind
    if kind == "dora" or info.get("dora"):
        args["dora_wd"] = "True"
    if args:
        fields["ss_network_args"] = json.dumps(args)
    return fields


def passthrough(given: Mapping[str, Any]) -> dict[str, str]:
    """Header entries given as such (``ss_*``, ``modelspec.*``, ``easel.*``) and unknown keys as ``easel.<key>``."""
    out: dict[str, str] = {}
    for key, value in given.items():
        if key.startswith(("ss_", "modelspec.", "easel.")):
            out[key] = _text(value)
        elif key not in KNOWN_KEYS and value is not None and not key.startswith("sshs_"):
            out[f"easel.{key}"] = _text(value)
    return out


def build_header(given: Mapping[str, Any], info: Mapping[str, Any], *, arch: str, profile: "LoraProfile",
          defaults: Mapping[str, Any], fmt: str) -> dict[str, str]:
    """The header of a saved LoRA (``given``: the caller's metadata; ``info``: ``keys.summary`` of its modules).

    Entries given as ``ss_*`` / ``modelspec.*`` / ``easel.*`` are kept unless easel computes them
    (network rank/alpha/type, architecture, format) or a plain key (``name``, ``trigger_word``...) sets them.
    """
    out = passthrough(given)
    name = given.get("name")
    if name:
        out.update({"ss_output_name": str(name), "modelspec.title": str(name)})
    out.setdefault("ss_output_name", out.get("modelspec.title", "LoRA"))
    out.setdefault("modelspec.title", out["ss_output_name"])
    out.setdefault("ss_v2", "False")
    out.update(network_fields(info, given))
    if profile.base_model_version:
        out["ss_base_model_version"] = profile.base_model_version
    out.update({target: _text(given[key]) for key, target in _SS_PLAIN.items() if given.get(key) is not None})
    resolution = _resolution(given.get("resolution"), defaults if "ss_resolution" not in out else {})
    if resolution is not None:
        out["ss_resolution"] = str(resolution)
        out["modelspec.resolution"] = f"{resolution[0]}x{resolution[1]}"
    tags = given.get("tag_frequency")
    if tags:
        nested = all(isinstance(v, Mapping) for v in tags.values())
        out["ss_tag_frequency"] = json.dumps(tags if nested else {out["ss_output_name"]: tags}, sort_keys=True)
    out.update({"modelspec.sai_model_spec": "1.0.0",
                "modelspec.architecture": f"{profile.modelspec_architecture or arch.partition(':')[0]}/lora",
                "modelspec.implementation": profile.modelspec_implementation})
    out.setdefault("modelspec.date", str(given.get("date") or datetime.datetime.now().replace(microsecond=0).isoformat()))
    prediction = given.get("prediction_type")
    if prediction in ("epsilon", "v_prediction", "v"):
        out["modelspec.prediction_type"] = "epsilon" if prediction == "epsilon" else "v"
    if given.get("trigger_word"):
        out["modelspec.trigger_phrase"] = out["easel.trigger_word"] = str(given["trigger_word"])
    out.update({target: _text(given[key]) for key, target in _MODELSPEC_PLAIN.items() if given.get(key) is not None})
    out.update({"easel.arch": arch, "easel.format": fmt,
                "easel.network_type": str(given.get("network_type") or info.get("network_type", "lora"))})
    if given.get("config") is not None:
        out["easel.config"] = _text(given["config"])
    return out


def addnet_hashes(tensors: "dict[str, torch.Tensor]", metadata: Mapping[str, str]) -> tuple[str, str]:
    """kohya's ``(sshs_model_hash, sshs_legacy_hash)`` of these tensors with these metadata (ss_* only)."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header:]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def trigger_words(metadata: Mapping[str, str], top: int = 5) -> list[str]:
    """Trigger words: modelspec.trigger_phrase / easel.trigger_word, then the most frequent training tags."""
    words: list[str] = []
    for key in ("modelspec.trigger_phrase", "easel.trigger_word"):
        if metadata.get(key) and metadata[key] not in words:
            words.append(metadata[key])
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency") or "{}")
    except json.JSONDecodeError:
        frequency = {}
    counts: dict[str, int] = {}
    for tags in frequency.values() if isinstance(frequency, dict) else []:
        for tag, count in (tags.items() if isinstance(tags, dict) else []):
            counts[tag.strip()] = counts.get(tag.strip(), 0) + int(count)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    words += [tag for tag, _ in ranked if tag and tag not in words][:top]
    return words
