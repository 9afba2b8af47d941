"""Evaluation results and their files: results.json, results.md (a column's strict best in bold) and results.csv."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.output import write_text_atomic

METRICS = {"clip_score": "CLIP Score", "style_similarity": "Style Similarity"}
"""Metric key -> column title. Higher is better for both."""


@dataclass
class ImageResult:
    """The metrics of one generated image."""

    prompt_index: int
    prompt: str
    seed: int
    file: str
    clip_score: float
    style_similarity: float | None = None


@dataclass
class VariantResult:
    """One variant (the base model, or the base with some LoRAs) and its images."""

    name: str
    loras: list[dict[str, Any]] = field(default_factory=list)
    reference_images: str | None = None
    images: list[ImageResult] = field(default_factory=list)

    def mean(self, metric: str) -> float | None:
        """Mean of ``metric`` over the images; None when it was not measured."""
        values = [getattr(image, metric) for image in self.images if getattr(image, metric) is not None]
        return sum(values) / len(values) if values else None


@dataclass
class EvalResults:
    """Everything one evaluation measured."""

    clip_model: str
    clip_score_scale: str
    prompts: list[str]
    seeds: list[int]
    variants: list[VariantResult]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for variant, raw in zip(self.variants, data["variants"]):
            raw.update({metric: variant.mean(metric) for metric in METRICS})
        return data


def _digits(metric: str, scale: str) -> int:
    """Decimals the table shows: 2 for percent CLIP scores, 4 for cosines."""
    return 2 if metric == "clip_score" and scale == "percent" else 4


def _format(value: float | None, metric: str, scale: str) -> str:
    return "-" if value is None else f"{value:.{_digits(metric, scale)}f}"


def _shown(results: EvalResults, metric: str) -> list[float | None]:
    """Each variant's mean of ``metric`` at the shown precision (None where it was not measured)."""
    means = [variant.mean(metric) for variant in results.variants]
    return [None if mean is None else round(mean, _digits(metric, results.clip_score_scale)) for mean in means]


def best_values(results: EvalResults) -> dict[str, float | None]:
    """Each metric's strict best: the highest shown mean when one variant alone has it, else None (ties, one variant)."""
    best: dict[str, float | None] = {}
    for metric in METRICS:
        values = [v for v in _shown(results, metric) if v is not None]
        top = max(values, default=None)
        best[metric] = top if len(values) > 1 and values.count(top) == 1 else None
    return best


def degenerate_notes(results: EvalResults) -> list[str]:
    """One sentence per metric on which every measured variant shows the same value (the column compares nothing)."""
    notes = []
    for metric, title in METRICS.items():
        values = [v for v in _shown(results, metric) if v is not None]
        if len(values) < 2 or len(set(values)) > 1:
            continue
        text = _format(values[0], metric, results.clip_score_scale)
        note = f"every variant scores {text} on {title}, so it does not tell them apart (a tiny or random CLIP model gives such scores"
        if metric == "clip_score" and results.clip_score_scale == "percent" and values[0] == 0:
            note += "; clip_score_scale percent counts each negative cosine as 0, clip_score_scale cosine shows the raw values"
        notes.append(note + ").")
    return notes


def markdown_table(results: EvalResults) -> str:
    """Rows = variants, columns = metrics (mean over images); a column's strict best value in bold (none when tied)."""
    best = best_values(results)
    shown = {metric: _shown(results, metric) for metric in METRICS}
    lines = ["| Model | " + " | ".join(METRICS.values()) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for index, variant in enumerate(results.variants):
        cells = []
        for metric in METRICS:
            text = _format(variant.mean(metric), metric, results.clip_score_scale)
            cells.append(f"**{text}**" if best[metric] is not None and shown[metric][index] == best[metric] else text)
        name = variant.name.replace("|", "\\|")  # a bare | would end the cell
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(results: EvalResults) -> str:
    """results.md: the table, any degenerate columns, and how it was measured."""
    scale = "100 * max(cosine, 0)" if results.clip_score_scale == "percent" else "cosine similarity"
    notes = "".join(f"**Degenerate scores:** {note}\n\n" for note in degenerate_notes(results))
    return (f"# Evaluation\n\n{markdown_table(results)}\n\n{notes}"
            f"- Bold: the best value of a column, when one variant alone has it at the precision shown.\n"
            f"- CLIP score: {scale} between each image and its prompt, with `{results.clip_model}`; mean over images.\n"
            f"- Style similarity: mean cosine similarity between each image's CLIP image embedding and the reference "
            f"images' embeddings; mean over images (- where no reference images were given).\n"
            f"- {len(results.prompts)} prompts x {len(results.seeds)} seeds ({', '.join(map(str, results.seeds))}) per variant.\n")


def results_csv(results: EvalResults) -> str:
    """results.csv: one row per variant with the mean of each metric."""
    stream = io.StringIO(newline="")
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["variant", "loras", *METRICS, "images"])
    for variant in results.variants:
        loras = "; ".join(f"{lora['path']}:{lora['weight']:g}" for lora in variant.loras)
        means = [variant.mean(metric) for metric in METRICS]
        writer.writerow([variant.name, loras, *("" if m is None else f"{m:.6f}" for m in means), len(variant.images)])
    return stream.getvalue()


def write_results(folder: Path, results: EvalResults) -> list[Path]:
    """Write results.json, results.md and results.csv into ``folder``; returns their paths."""
    files = {
        "results.json": json.dumps(results.to_json(), indent=2, ensure_ascii=False) + "\n",
        "results.md": results_markdown(results),
        "results.csv": results_csv(results),
    }
    for name, text in files.items():
        write_text_atomic(folder / name, text)
    return [folder / name for name in files]
