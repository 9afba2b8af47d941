"""What a LoRA file holds, as data and as readable lines: format, architecture, ranks, metadata, trigger words."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from toolkit.lora_io.files import LoraFile
from toolkit.lora_io.metadata import trigger_words

SHOWN_METADATA = (
    "ss_output_name", "ss_base_model_version", "ss_sd_model_name", "ss_network_module", "ss_network_dim",
    "ss_network_alpha", "ss_network_args", "ss_resolution", "ss_num_train_images", "ss_steps", "ss_epoch",
    "ss_learning_rate", "ss_optimizer", "modelspec.architecture", "modelspec.title", "modelspec.resolution",
    "modelspec.prediction_type", "modelspec.date", "easel.arch", "easel.format", "sshs_model_hash",
)


def describe(lora: LoraFile) -> dict[str, Any]:
    """A JSON-able description of a loaded LoRA."""
    modules = list(lora.modules.values())
    by_component = Counter(m.component for m in modules)
    kinds = Counter(("dora" if m.dora else m.kind) for m in modules)
    ranks = Counter((m.rank, m.alpha, "conv" if m.is_spatial else "linear") for m in modules)
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for m in modules for t in m.tensors.values())
    return {
        "path": str(lora.path) if lora.path else None,
        "format": lora.format,
        "architecture": lora.arch,
        "modules": len(modules),
        "components": dict(sorted(by_component.items())),
        "network_types": dict(sorted(kinds.items())),
        "rank_alpha": [{"rank": r, "alpha": a, "layers": kind, "modules": n} for (r, a, kind), n in ranks.most_common()],
        "parameters": sum(t.numel() for m in modules for t in m.tensors.values()),
        "dtypes": dict(dtypes),
        "trigger_words": trigger_words(lora.metadata),
        "metadata": dict(sorted(lora.metadata.items())),
        "module_list": [{"module": m.key, "type": "dora" if m.dora else m.kind, "rank": m.rank, "alpha": m.alpha} for m in modules],
    }


def _short(value: str, limit: int = 160) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def report_lines(info: dict[str, Any], show_keys: bool = False) -> list[str]:
    """The description as lines for the console."""
    lines = [str(info["path"] or "LoRA"),
             f"  format: {info['format']}    architecture: {info['architecture'] or 'unknown (set arch)'}",
             f"  modules: {info['modules']} (" + ", ".join(f"{c} {n}" for c, n in info["components"].items()) + ")"
             "    types: " + ", ".join(f"{k} {n}" for k, n in info["network_types"].items()),
             "  rank/alpha: " + "; ".join(f"{r['rank']}/{r['alpha']:g} {r['layers']} x{r['modules']}" for r in info["rank_alpha"]),
             f"  parameters: {info['parameters']:,}    dtypes: " + ", ".join(f"{d} {n}" for d, n in info["dtypes"].items()),
             "  trigger words: " + (", ".join(info["trigger_words"]) or "(none recorded)")]
    meta = info["metadata"]
    shown = [key for key in SHOWN_METADATA if key in meta]
    if meta:
        lines.append(f"  metadata ({len(meta)} entries):")
        lines += [f"    {key}: {_short(meta[key])}" for key in shown]
        rest = len(meta) - len(shown)
        if rest:
            lines.append(f"    ... and {rest} more (output_file writes them all)")
    else:
        lines.append("  metadata: (none)")
    if show_keys:
        lines += [f"    {m['module']}: {m['type']} rank {m['rank']} alpha {m['alpha']:g}" for m in info["module_list"]]
    return lines


def to_json(infos: list[dict[str, Any]]) -> str:
    return json.dumps(infos, indent=2, sort_keys=True, default=str)
