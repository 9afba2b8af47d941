"""The dataset state: reading a folder, the steps, writing the result and its report."""

import json
from pathlib import Path

import pytest

from tests.prep_images import make_mixed_dataset, make_raw_dataset, scene
from toolkit.config.blocks import DatasetConfig
from toolkit.config.prep import ConvertCaptionsConfig, DedupeConfig, FilterConfig, ResizeConfig, TagConfig
from toolkit.data.scan import scan_dataset
from toolkit.errors import EaselError
from toolkit.prep import steps
from toolkit.prep.pipeline import check_folders, format_report, list_images, read_dataset, write_dataset


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    return folder, make_raw_dataset(folder)


def test_read_dataset_finds_images_and_captions(raw, tmp_path):
    folder, _ = raw
    state = read_dataset(folder, "txt", tmp_path / "work")
    names = [item.name for item in state.items]
    assert names == sorted(["blurry.png", "broken.png", "garden.png", "garden_copy.jpg", "house.png", "sub/nested.png", "tiny.png", "wide.png"])
    captions = {item.name: item.caption for item in state.items}
    assert captions["house.png"] == "a red house" and captions["tiny.png"] is None
    assert state.caption_formats == ["txt"]


def test_metadata_wins_over_sidecar_and_sidecar_fills_gaps(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    scene(0).save(folder / "a.png")
    scene(1).save(folder / "b.png")
    scene(2).save(folder / "c.png")
    (folder / "a.txt").write_text("from txt a")
    (folder / "c.txt").write_text("from txt c")
    (folder / "metadata.csv").write_text("file_name,text\na.png,from csv a\nb.png,from csv b\nc.png,\n")
    state = read_dataset(folder, "txt", tmp_path / "work")
    assert {i.name: i.caption for i in state.items} == {"a.png": "from csv a", "b.png": "from csv b", "c.png": "from txt c"}
    assert state.caption_formats == ["txt", "csv"]


def _training_reads(folder: Path) -> dict[str, str | None]:
    """File name -> caption of its own (None: the default), as a training run on ``folder`` reads them."""
    scan = scan_dataset(DatasetConfig(folder_path=str(folder)))
    return {r.path.resolve().relative_to(folder.resolve()).as_posix(): None if r.caption_source == "default" else r.caption
            for r in scan.records}


def test_prep_reads_the_images_and_captions_training_reads(tmp_path):
    folder = tmp_path / "raw"
    expected = make_mixed_dataset(folder)
    assert _training_reads(folder) == expected
    state = read_dataset(folder, "txt", tmp_path / "work")
    assert {item.name: item.caption for item in state.items} == expected
    assert [item.name for item in state.items] == list(_training_reads(folder))
    assert state.dropped == [] and state.caption_formats == ["txt", "jsonl"]
    assert list_images(folder) == scan_dataset(DatasetConfig(folder_path=str(folder))).images


def test_a_prepared_folder_trains_on_the_captions_of_its_input(tmp_path):
    folder, out = tmp_path / "raw", tmp_path / "out"
    expected = make_mixed_dataset(folder)
    write_dataset(read_dataset(folder, "txt", tmp_path / "work"), out, "txt")
    assert _training_reads(out) == expected


def test_images_that_cannot_be_copied_are_dropped_when_read(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    scene(0).save(folder / "a.png")
    scene(1).save(tmp_path / "elsewhere.png")
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    (folder / "metadata.jsonl").write_text('{"file_name": "../elsewhere.png", "text": "outside"}\n')
    state = read_dataset(folder, "txt", tmp_path / "work")
    assert [item.name for item in state.items] == ["a.png"]
    assert {d.item.name: (d.step, d.reason) for d in state.dropped} == {
        "gone.png": ("read", "unreadable"), "../elsewhere.png": ("read", "outside the input folder")}


def _run_all(folder, work):
    state = read_dataset(folder, "txt", work)
    steps.run_filter(state, FilterConfig(type="filter", blur_threshold=100, min_size=32, min_aspect=0.5, max_aspect=2.0), "filter")
    steps.run_dedupe(state, DedupeConfig(type="dedupe"), "dedupe")
    steps.run_resize(state, ResizeConfig(type="resize", size=48), "resize")
    steps.run_tag(state, TagConfig(type="tag", text="wcstyle"), "tag")
    return state


def test_steps_drop_each_problem_with_its_reason(raw, tmp_path):
    folder, expected = raw
    state = _run_all(folder, tmp_path / "work")
    outcome = {item.name: "kept" for item in state.items} | {d.item.name: d.reason for d in state.dropped}
    assert outcome == expected
    duplicate = next(d for d in state.dropped if d.reason == "duplicate")
    assert duplicate.detail.startswith("of garden.png")
    captions = {item.name: item.caption for item in state.items}
    assert captions == {"garden.png": "WCStyle, a garden", "house.png": "wcstyle, a red house", "sub/nested.png": "wcstyle, a nested tree"}
    assert all(item.path.is_relative_to(tmp_path / "work") for item in state.items)


def test_dedupe_keeps_the_largest_or_the_first(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    scene(3).resize((40, 40)).save(folder / "a_small.png")
    scene(3).save(folder / "b_large.png")
    for keep, dropped in (("largest", "a_small.png"), ("first", "b_large.png")):
        state = read_dataset(folder, "txt", tmp_path / "work")
        steps.run_dedupe(state, DedupeConfig(type="dedupe", keep=keep), "dedupe")
        assert [d.item.name for d in state.dropped] == [dropped]


def test_write_dataset_copies_and_reports(raw, tmp_path):
    folder, expected = raw
    state = _run_all(folder, tmp_path / "work")
    steps.run_convert_captions(state, ConvertCaptionsConfig(type="convert_captions", to=["jsonl", "txt"]), "convert")
    out = tmp_path / "out"
    report = write_dataset(state, out, "txt")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted([
        "garden.png", "garden.txt", "house.png", "house.txt", "sub/nested.png", "sub/nested.txt", "metadata.jsonl", "report.json"])
    assert json.loads((out / "report.json").read_text()) == report
    assert {row["file"]: row.get("reason", "kept") for row in report["files"]} == expected
    assert report["summary"] == {"images": 8, "kept": 3, "dropped": 5,
                                 "dropped_by_reason": {"aspect": 1, "blurry": 1, "duplicate": 1, "too small": 1, "unreadable": 1}}
    table = format_report(report)
    assert "blurry.png" in table and "Laplacian variance" in table and table.splitlines()[-1].startswith("kept 3 of 8 images")


def test_unchanged_images_are_copied_byte_for_byte(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    scene(0).save(folder / "a.jpg", quality=80)
    state = read_dataset(folder, "txt", tmp_path / "work")
    steps.run_tag(state, TagConfig(type="tag", text="x"), "tag")
    write_dataset(state, tmp_path / "out", "txt")
    assert (tmp_path / "out" / "a.jpg").read_bytes() == (folder / "a.jpg").read_bytes()
    assert (tmp_path / "out" / "a.txt").read_text() == "x\n"


@pytest.mark.parametrize("mode", ["center_crop", "max_side"])
def test_resize_rewrites_only_images_whose_size_changes(tmp_path, mode):
    folder = tmp_path / "raw"
    folder.mkdir()
    scene(0, (32, 32)).save(folder / "right_size.jpg", quality=80)
    scene(1, (64, 48)).save(folder / "large.jpg", quality=80)
    state = read_dataset(folder, "txt", tmp_path / "work")
    steps.run_resize(state, ResizeConfig(type="resize", mode=mode, size=32), "resize")
    write_dataset(state, tmp_path / "out", "txt")
    assert (tmp_path / "out" / "right_size.jpg").read_bytes() == (folder / "right_size.jpg").read_bytes()
    from PIL import Image
    assert Image.open(tmp_path / "out" / "large.jpg").size == ((32, 32) if mode == "center_crop" else (32, 24))
    measures = {row["file"]: row["measures"] for row in json.loads((tmp_path / "out" / "report.json").read_text())["files"]}
    assert measures["large.jpg"]["resized_from"] == "64x48" and "resized_from" not in measures["right_size.jpg"]


def test_check_folders_protects_the_input_and_foreign_folders(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    for bad in (source, source / "out", tmp_path):
        with pytest.raises(EaselError, match="overlaps"):
            check_folders(source, [bad])
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep_me.jpg").write_bytes(b"x")
    with pytest.raises(EaselError, match="did not write"):
        check_folders(source, [foreign])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(EaselError, match="is a file"):
        check_folders(source, [tmp_path / "a_file"])
    check_folders(source, [tmp_path / "new"])


def test_writing_again_replaces_an_earlier_output(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    scene(0).save(folder / "a.png")
    scene(1).save(folder / "b.png")
    out = tmp_path / "out"
    write_dataset(read_dataset(folder, "txt", tmp_path / "w"), out, "txt")
    (folder / "b.png").unlink()
    check_folders(folder, [out])
    write_dataset(read_dataset(folder, "txt", tmp_path / "w"), out, "txt")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "report.json"]
