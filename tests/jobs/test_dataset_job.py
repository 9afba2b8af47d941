"""``job: dataset`` end to end through run.py's main(), from the example configs, on hand-made folders."""

import json
from pathlib import Path

import pytest
from PIL import ImageFilter

from tests.prep_images import make_raw_dataset, scene
from toolkit.data.metadata import read_metadata

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _write_config(path: Path, processes: str) -> Path:
    path.write_text(f"job: dataset\nconfig:\n  name: t\n  process:\n{processes}", encoding="utf-8")
    return path


def test_prep_example_filters_dedupes_resizes_and_tags(tmp_path, run_main, messages):
    raw, out = tmp_path / "raw", tmp_path / "clean"
    expected = make_raw_dataset(raw)
    before = _snapshot(raw)
    code = run_main(EXAMPLES / "dataset_prep.yaml", "--set", f"config.process.0.input_folder={raw}",
                    "--set", f"config.process.3.output_folder={out}", "--set", "config.process.0.min_size=32",
                    "--set", "config.process.2.size=48")
    assert code == 0
    assert _snapshot(raw) == before
    report = json.loads((out / "report.json").read_text())
    assert {row["file"]: row.get("reason", "kept") for row in report["files"]} == expected
    blurry = next(row for row in report["files"] if row["file"] == "blurry.png")
    assert blurry["step"] == "filter (process 0)" and blurry["measures"]["laplacian_variance"] < 100
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert kept == ["garden.png", "house.png", "sub/nested.png"]
    from PIL import Image
    assert all(Image.open(out / name).size == (48, 48) for name in kept)
    captions = {name: (out / name).with_suffix(".txt").read_text() for name in kept}
    assert captions == {"garden.png": "WCStyle, a garden\n", "house.png": "wcstyle, a red house\n", "sub/nested.png": "wcstyle, a nested tree\n"}
    printed = "\n".join(messages)
    assert "blurry.png" in printed and "kept 3 of 8 images" in printed
    assert not list(tmp_path.glob(".*easel*")), "work and staging folders are removed"


def test_running_twice_tags_once_and_replaces_the_output(tmp_path, run_main):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    scene(0).save(raw / "a.png")
    (raw / "a.txt").write_text("a cat")
    config = _write_config(tmp_path / "tag.yaml", f"""    - type: tag
      input_folder: {raw}
      text: drawn by xyz
      position: suffix
      output_folder: {out}
""")
    assert run_main(config) == 0
    assert run_main(config) == 0
    assert (out / "a.txt").read_text() == "a cat, drawn by xyz\n"
    second = _write_config(tmp_path / "again.yaml", f"""    - type: tag
      input_folder: {out}
      text: drawn by xyz
      position: suffix
      output_folder: {tmp_path / 'out2'}
""")
    assert run_main(second) == 0
    assert (tmp_path / "out2" / "a.txt").read_text() == "a cat, drawn by xyz\n"


def test_caption_formats_round_trip_txt_jsonl_csv_txt(tmp_path, run_main):
    raw = tmp_path / "txt"
    (raw / "sub").mkdir(parents=True)
    captions = {"a.png": "A HANA_TOFU, smiling, with a \"quote\"", "sub/b.jpg": "두부 캐릭터, reading a book", "c.png": "plain"}
    for i, (name, text) in enumerate(captions.items()):
        scene(i).save(raw / name)
        (raw / name).with_suffix(".txt").write_text(text + "\n")
    folders = [raw]
    for step, fmt in enumerate(["jsonl", "csv", "txt"]):
        target = tmp_path / fmt / str(step)
        config = _write_config(tmp_path / f"{step}.yaml", f"""    - type: convert_captions
      input_folder: {folders[-1]}
      to: {fmt}
      output_folder: {target}
""")
        assert run_main(config) == 0
        folders.append(target)
    jsonl, csv_folder, back = folders[1:]
    assert not list(jsonl.rglob("*.txt")) and (jsonl / "metadata.jsonl").is_file()
    assert sorted(p.name for p in csv_folder.iterdir()) == ["a.png", "c.png", "metadata.csv", "report.json", "sub"]
    assert read_metadata(csv_folder / "metadata.csv") == {(csv_folder / n).resolve(): t for n, t in captions.items()}
    assert {n: (back / n).with_suffix(".txt").read_text() for n in captions} == {n: t + "\n" for n, t in captions.items()}
    assert not (back / "metadata.csv").exists()


def test_captions_example_resizes_keeping_aspect_tags_and_writes_two_formats(tmp_path, run_main):
    raw, out = tmp_path / "raw", tmp_path / "drawings"
    raw.mkdir()
    scene(0, (200, 100)).save(raw / "image_1.png")
    scene(1, (60, 90)).save(raw / "image_2.png")
    (raw / "metadata.csv").write_text("file_name,text\nimage_1.png,\"a girl, smiling\"\nimage_2.png,a boy drawn by KSH drawing style\n")
    code = run_main(EXAMPLES / "dataset_captions.yaml", "--set", f"config.process.0.input_folder={raw}",
                    "--set", f"config.process.2.output_folder={out}", "--set", "config.process.0.size=100")
    assert code == 0
    from PIL import Image
    assert Image.open(out / "image_1.png").size == (100, 50) and Image.open(out / "image_2.png").size == (60, 90)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert rows == [{"file_name": "image_1.png", "text": "a girl, smiling, drawn by KSH drawing style"},
                    {"file_name": "image_2.png", "text": "a boy drawn by KSH drawing style"}]
    assert (out / "image_1.txt").read_text() == "a girl, smiling, drawn by KSH drawing style\n"


def test_intermediate_output_keeps_a_stage(tmp_path, run_main):
    raw = tmp_path / "raw"
    make_raw_dataset(raw)
    config = _write_config(tmp_path / "stages.yaml", f"""    - type: filter
      input_folder: {raw}
      blur_threshold: 100
      output_folder: {tmp_path / 'filtered'}
    - type: resize
      size: 16
      output_folder: {tmp_path / 'small'}
""")
    assert run_main(config) == 0
    filtered = json.loads((tmp_path / "filtered" / "report.json").read_text())["summary"]
    assert filtered["dropped_by_reason"] == {"blurry": 1, "unreadable": 1}
    from PIL import Image
    assert Image.open(tmp_path / "filtered" / "house.png").size == (96, 96)
    assert Image.open(tmp_path / "small" / "house.png").size == (16, 16)


@pytest.mark.parametrize("processes,message", [
    ("    - type: tag\n      text: x\n      output_folder: {out}\n", "must set input_folder"),
    ("    - type: tag\n      input_folder: {raw}\n      text: x\n", "must set output_folder"),
    ("    - type: tag\n      input_folder: {raw}\n      text: x\n    - type: dedupe\n      input_folder: {raw}\n      output_folder: {out}\n",
     "only the first process reads a folder"),
    ("    - type: tag\n      input_folder: {raw}\n      text: x\n      output_folder: {raw}/out\n", "overlaps the input folder"),
    ("    - type: filter\n      input_folder: {raw}\n      blurr_threshold: 3\n      output_folder: {out}\n", "did you mean 'blur_threshold'"),
])
def test_config_mistakes_are_reported_and_change_nothing(tmp_path, run_main, messages, processes, message):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    scene(0).save(raw / "a.png")
    before = _snapshot(raw)
    config = _write_config(tmp_path / "bad.yaml", processes.format(raw=raw, out=out))
    assert run_main(config) == 2
    assert message in "\n".join(messages)
    assert _snapshot(raw) == before and not out.exists()


def test_dry_run_plans_without_touching_anything(tmp_path, run_main, capfd):
    raw = tmp_path / "raw"
    make_raw_dataset(raw)
    code = run_main("--dry-run", EXAMPLES / "dataset_prep.yaml", "--set", f"config.process.0.input_folder={raw}",
                    "--set", f"config.process.3.output_folder={tmp_path / 'out'}")
    assert code == 0
    printed = capfd.readouterr().out
    assert "process 1: dedupe {'max_distance': 5, 'keep': 'largest'}" in printed and "(8 images)" in printed
    assert not (tmp_path / "out").exists()


def test_a_step_that_drops_every_image_fails_naming_its_settings(tmp_path, run_main, messages):
    """`kept 0 of 16 images` used to exit 0 with 'wrote ...': now exit 2, counts per reason, the setting and its line."""
    raw, out = tmp_path / "raw", tmp_path / "clean"
    raw.mkdir()
    for i in range(3):
        scene(i, (40, 40)).filter(ImageFilter.GaussianBlur(4)).save(raw / f"small{i}.png")
    scene(5, (200, 40)).save(raw / "wide.png")
    code = run_main(EXAMPLES / "dataset_prep.yaml", "--set", f"config.process.0.input_folder={raw}",
                    "--set", f"config.process.3.output_folder={out}", "--set", "config.process.0.min_size=32")
    assert code == 2 and not out.exists()
    text = "\n".join(messages)
    assert "line 14, col 7: config.process[0].max_aspect: filter (process 0) dropped all 4 images: 1 aspect " \
           "(e.g. wide.png: width/height 5.000 > 2.0); change or remove max_aspect (now 2.0)" in text
    assert "config.process[0].blur_threshold: filter (process 0) dropped all 4 images: 3 blurry (e.g. small0.png: " \
           "Laplacian variance" in text and "change or remove blur_threshold (now 100.0)" in text
    assert "Nothing was written." in text and "wrote" not in text


def test_an_input_without_images_fails(tmp_path, run_main, messages):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "notes.txt").write_text("no images here")
    config = _write_config(tmp_path / "tag.yaml", f"    - type: tag\n      input_folder: {raw}\n      text: x\n"
                                                  f"      output_folder: {tmp_path / 'out'}\n")
    assert run_main(config) == 2 and not (tmp_path / "out").exists()
    assert f"line 6, col 7: config.process[0].input_folder: the input folder '{raw}' has no usable images: it holds no " \
           ".jpg/.jpeg/.png/.webp/.bmp files" in "\n".join(messages)
