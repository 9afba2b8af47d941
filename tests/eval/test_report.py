"""results.json / results.md / results.csv and the comparison grid."""

import csv
import io
import json

import pytest
from PIL import Image

from toolkit.eval.grid import PAD, comparison_grid
from toolkit.eval.report import EvalResults, ImageResult, VariantResult, degenerate_notes, markdown_table, write_results


def _variant(name, clips, styles, loras=()):
    images = [ImageResult(i, f"prompt {i}", 0, f"images/{name}/{i:02d}_0.png", c, s) for i, (c, s) in enumerate(zip(clips, styles))]
    return VariantResult(name, [{"path": p, "weight": w} for p, w in loras], None, images)


@pytest.fixture
def results():
    return EvalResults("tiny-clip", "cosine", ["prompt 0", "prompt 1"], [0], [
        _variant("base", [0.30, 0.32], [None, None]),
        _variant("anime", [0.33, 0.31], [0.70, 0.66], [("anime.safetensors", 1.0)]),
        _variant("watercolor_anime_0.6_0.4", [0.29, 0.30], [0.80, 0.76], [("wc.safetensors", 0.6), ("anime.safetensors", 0.4)]),
    ])


def test_means_and_missing_metrics(results):
    base, anime, mix = results.variants
    assert anime.mean("clip_score") == pytest.approx(0.32)
    assert base.mean("style_similarity") is None
    assert mix.mean("style_similarity") == pytest.approx(0.78)


def test_markdown_table_bolds_the_best_of_each_column(results):
    lines = markdown_table(results).splitlines()
    assert lines[0] == "| Model | CLIP Score | Style Similarity |"
    assert lines[2] == "| base | 0.3100 | - |"
    assert lines[3] == "| anime | **0.3200** | 0.6800 |"
    assert lines[4] == "| watercolor_anime_0.6_0.4 | 0.2950 | **0.7800** |"


def test_only_a_strict_best_is_bold_and_percent_has_two_decimals():
    """A shared best (at the shown precision) is no best: nothing in that column is bold."""
    tied = EvalResults("c", "percent", ["p"], [0], [_variant("a", [31.0], [0.5]), _variant("b", [31.001], [0.4]),
                                                    _variant("c", [30.0], [0.3])])
    lines = markdown_table(tied).splitlines()
    assert lines[2:] == ["| a | 31.00 | **0.5000** |", "| b | 31.00 | 0.4000 |", "| c | 30.00 | 0.3000 |"]
    assert degenerate_notes(tied) == []


def test_all_equal_scores_are_called_degenerate(tmp_path):
    """A tiny CLIP gave every variant 0.00 (percent clamps negative cosines) and the report bolded them all as best."""
    zero = EvalResults("tiny:clip", "percent", ["p"], [0], [_variant(name, [0.0], [0.25]) for name in ("base", "a", "a+b")])
    assert "**" not in markdown_table(zero)
    (clip_note, style_note) = degenerate_notes(zero)
    assert clip_note.startswith("every variant scores 0.00 on CLIP Score, so it does not tell them apart")
    assert "clip_score_scale cosine shows the raw values" in clip_note
    assert style_note.startswith("every variant scores 0.2500 on Style Similarity") and "clip_score_scale" not in style_note
    write_results(tmp_path, zero)
    assert f"**Degenerate scores:** {clip_note}" in (tmp_path / "results.md").read_text()


def _structured(name, structures):
    images = [ImageResult(0, "p", seed, f"images/{name}/00_in_{seed}.png", 0.3 + seed / 100, None, kept, "in.png")
              for seed, kept in enumerate(structures)]
    return VariantResult(name, [], None, images)


def test_structure_kept_column_follows_the_strict_best_and_degenerate_rules(tmp_path):
    """The img2img column is bolded and called degenerate by the same rules as the CLIP columns, at its 4 decimals."""
    distinct = EvalResults("c", "cosine", ["p"], [0, 1], [_structured("light", [0.8, 0.6]), _structured("heavy", [0.2, 0.3])])
    lines = markdown_table(distinct).splitlines()
    assert lines[0] == "| Model | CLIP Score | Style Similarity | Structure Kept |"
    assert lines[2:] == ["| light | 0.3050 | - | **0.7000** |", "| heavy | 0.3050 | - | 0.2500 |"]
    tied = EvalResults("c", "cosine", ["p"], [0, 1], [_structured("a", [0.5, 0.5]), _structured("b", [0.50001, 0.5]),
                                                      _structured("c", [0.1, 0.1])])
    assert markdown_table(tied).splitlines()[2].endswith("| 0.5000 |"), "a tie at the shown precision bolds nothing"
    kept = EvalResults("c", "cosine", ["p"], [0], [_structured(name, [1.0]) for name in ("base", "lora")])
    assert "**" not in markdown_table(kept)
    clip_note, structure_note = degenerate_notes(kept)
    assert structure_note.startswith("every variant scores 1.0000 on Structure Kept, so it does not tell them apart (their LoRAs, strengths")
    write_results(tmp_path, kept)
    assert f"**Degenerate scores:** {structure_note}" in (tmp_path / "results.md").read_text()


def test_a_pipe_in_a_variant_name_does_not_split_the_row():
    table = markdown_table(EvalResults("c", "cosine", ["p"], [0], [_variant("wc|anime", [0.3], [None])]))
    assert table.splitlines()[2] == "| wc\\|anime | 0.3000 | - |", "one variant has no best to bold"


def test_written_files(results, tmp_path):
    paths = write_results(tmp_path, results)
    assert [p.name for p in paths] == ["results.json", "results.md", "results.csv"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["base", "anime", "watercolor_anime_0.6_0.4"]
    assert data["variants"][1]["clip_score"] == pytest.approx(0.32) and data["variants"][0]["style_similarity"] is None
    assert data["variants"][2]["images"][1] == {"prompt_index": 1, "prompt": "prompt 1", "seed": 0,
                                                 "file": "images/watercolor_anime_0.6_0.4/01_0.png", "clip_score": 0.30, "style_similarity": 0.76}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert rows[2] == {"variant": "watercolor_anime_0.6_0.4", "loras": "wc.safetensors:0.6; anime.safetensors:0.4",
                       "clip_score": "0.295000", "style_similarity": "0.780000", "images": "2"}
    assert rows[0]["style_similarity"] == ""
    markdown = (tmp_path / "results.md").read_text()
    assert markdown_table(results) in markdown and "cosine similarity" in markdown and "tiny-clip" in markdown


def test_grid_places_each_variant_and_prompt(tmp_path):
    colours = {"base": (200, 0, 0), "lora": (0, 0, 200)}
    cells = [[[Image.new("RGB", (64, 32), colours[name])] * 2 for _ in range(3)] for name in colours]
    grid = comparison_grid(list(colours), ["first prompt", "a much longer second prompt that needs wrapping", "third"], cells, cell=40)
    rows, columns, per_cell = 2, 3, 2
    column_width = per_cell * 40 + PAD
    assert grid.width > columns * column_width and grid.height > rows * 40
    label_width = grid.width - columns * (column_width + PAD) - PAD
    header = grid.height - rows * (40 + PAD) - PAD
    for r, name in enumerate(colours):
        for c in range(columns):
            for i in range(per_cell):
                x = label_width + c * (column_width + PAD) + i * (40 + PAD) + 20
                y = header + r * (40 + PAD) + 20
                assert grid.getpixel((x, y)) == colours[name]
    # a 64x32 image fits a 40x40 cell as 40x20, centered: white above it
    assert grid.getpixel((label_width + 20, header + 2)) == (255, 255, 255)
