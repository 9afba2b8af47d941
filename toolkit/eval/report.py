"""Evaluation results and their files: results.json, results.md (a column's strict best in bold) and results.csv."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.output import write_text_atomic

METRICS = {"clip_score": "CLIP Score", "style_similarity": "Style Similarity", "structure": "Structure Kept"}
"""Metric key -> column title. Higher is better for all; a metric no variant measured gets no column."""
DEGENERATE_CAUSES = {"clip_score": "a tiny or random CLIP model gives such scores",
                     "style_similarity": "a tiny or random CLIP model gives such scores",
                     "structure": "their LoRAs, strengths and ControlNets change nothing the input's edges show"}
"""Metric key -> the usual reason every variant scores the same on it (said with the degenerate-column warning)."""


@dataclass
class ImageResult:
    """The metrics of one generated image."""

    prompt_index: int
    prompt: str
    seed: int
    file: str
    clip_score: float
    style_similarity: float | None = None
    structure: float | None = None
    """Edge agreement (0-1) of the image with its img2img input; None for txt2img."""
    input_image: str | None = None
    """The img2img input it was made from."""


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
        """The results as JSON data; what was not measured (txt2img: structure, input image) is left out."""
        data = asdict(self)
        metrics = shown_metrics(self)
        for variant, raw in zip(self.variants, data["variants"]):
            raw.update({metric: variant.mean(metric) for metric in metrics})
            for image in raw["images"]:
                for key in ("structure", "input_image"):
                    if image[key] is None:
                        del image[key]
        return data


def shown_metrics(results: EvalResults) -> list[str]:
    """The metrics with a column: CLIP score and style similarity always, the others where some variant measured them."""
    return [metric for metric in METRICS if metric in ("clip_score", "style_similarity")
            or any(variant.mean(metric) is not None for variant in results.variants)]


def _digits(metric: str, scale: str) -> int:
    """Decimals the table shows: 2 for percent CLIP scores, 4 for cosines and edge agreement."""
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
        note = f"every variant scores {text} on {title}, so it does not tell them apart ({DEGENERATE_CAUSES[metric]}"
        if metric == "clip_score" and results.clip_score_scale == "percent" and values[0] == 0:
            note += "; clip_score_scale percent counts each negative cosine as 0, clip_score_scale cosine shows the raw values"
        notes.append(note + ").")
    return notes


def markdown_table(results: EvalResults) -> str:
    """Rows = variants, columns = metrics (mean over images); a column's strict best value in bold (none when tied)."""
    best, metrics = best_values(results), shown_metrics(results)
    shown = {metric: _shown(results, metric) for metric in metrics}
    lines = ["| Model | " + " | ".join(METRICS[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for index, variant in enumerate(results.variants):
        cells = []
        for metric in metrics:
            text = _format(variant.mean(metric), metric, results.clip_score_scale)
            cells.append(f"**{text}**" if best[metric] is not None and shown[metric][index] == best[metric] else text)
        name = variant.name.replace("|", "\\|")  # a bare | would end the cell
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(results: EvalResults) -> str:
    """results.md: the table, any degenerate columns, and how it was measured."""
    from toolkit.control.edges import TOLERANCE

    scale = "100 * max(cosine, 0)" if results.clip_score_scale == "percent" else "cosine similarity"
    degenerate = "".join(f"**Degenerate scores:** {note}\n\n" for note in degenerate_notes(results))
    notes = ["- Bold: the best value of a column, when one variant alone has it at the precision shown.",
             f"- CLIP score: {scale} between each image and its prompt, with `{results.clip_model}`; mean over images.",
             "- Style similarity: mean cosine similarity between each image's CLIP image embedding and the reference "
             "images' embeddings; mean over images (- where no reference images were given)."]
    if "structure" in shown_metrics(results):
        notes.append(f"- Structure kept: edge agreement (F1 of Canny edges, {TOLERANCE} px tolerance) between each img2img "
                     "output and its input; 1 = the same edges, 0 = none kept; mean over images.")
    notes.append(f"- {len(results.prompts)} prompts x {len(results.seeds)} seeds ({', '.join(map(str, results.seeds))}) per variant.")
    return f"# Evaluation\n\n{markdown_table(results)}\n\n{degenerate}" + "\n".join(notes) + "\n"


def results_csv(results: EvalResults) -> str:
    """results.csv: one row per variant with the mean of each metric."""
    stream = io.StringIO(newline="")
    writer = csv.writer(stream, lineterminator="\n")
    metrics = shown_metrics(results)
    writer.writerow(["variant", "loras", *metrics, "images"])
    for variant in results.variants:
        loras = "; ".join(f"{lora['path']}:{lora['weight']:g}" for lora in variant.loras)
        means = [variant.mean(metric) for metric in metrics]
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
