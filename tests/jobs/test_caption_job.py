"""``job: caption`` end to end through run.py's main(), from the example configs, with tiny random models."""

from pathlib import Path

import pytest

from tests.prep_images import make_mixed_dataset, scene
from toolkit.config.blocks import DatasetConfig
from toolkit.data.scan import scan_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "anime"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png", "d.webp"]):
        scene(i, (48 + 8 * i, 40)).save(folder / name)
    (folder / "d.txt").write_text("my own caption\n")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "_latent_cache").mkdir()
    scene(9).save(folder / "_latent_cache" / "skip.png")  # the cache folder training never reads
    return folder


def _captions(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*.txt"))}


def test_blip_example_captions_missing_files_with_the_trigger(images, tiny_blip, run_main, messages):
    code = run_main(EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={images}",
                    "--set", f"config.process.0.model={tiny_blip}", "--set", "config.process.0.batch_size=2",
                    "--set", "config.process.0.generate_kwargs={min_new_tokens: 2}", "--set", "config.process.0.max_new_tokens=4")
    assert code == 0
    captions = _captions(images)
    assert sorted(captions) == ["a.txt", "b.txt", "d.txt", "sub/c.txt"]
    assert captions["d.txt"] == "my own caption\n"
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        text = captions[name]
        assert text.startswith("anistyle, ") and text.endswith("\n") and text.count("anistyle") == 1
        assert len(text.strip()) > len("anistyle, ")
    err = "\n".join(messages)
    assert "5 images in" in err and "4 to caption, 1 already captioned" in err
    assert "wrote 3 captions" in err and "broken.png (not an image)" in err


def test_overwrite_recaptions_everything(images, tiny_blip, run_main):
    args = [EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={images}", "--set", f"config.process.0.model={tiny_blip}",
            "--set", "config.process.0.max_new_tokens=3", "--set", "config.process.0.num_beams=1"]
    assert run_main(*args) == 0
    first = _captions(images)
    assert run_main(*args, "--set", "config.process.0.overwrite=true", "--set", "config.process.0.caption_ext=.caption") == 0
    assert _captions(images) == first
    redone = {p.relative_to(images).as_posix(): p.read_text() for p in images.rglob("*.caption")}
    assert sorted(redone) == ["a.caption", "b.caption", "d.caption", "sub/c.caption"]
    assert run_main(*args, "--set", "config.process.0.overwrite=true") == 0
    assert _captions(images)["d.txt"].startswith("anistyle")
    assert {k: v for k, v in _captions(images).items() if k != "d.txt"} == {k: v for k, v in first.items() if k != "d.txt"}


def test_progress_bar_counts_every_image_to_caption(images, tiny_blip, run_main, capfd):
    assert run_main(EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={images}",
                    "--set", f"config.process.0.model={tiny_blip}", "--set", "config.process.0.batch_size=3",
                    "--set", "config.process.0.max_new_tokens=2", "--set", "config.process.0.num_beams=1") == 0
    bar = capfd.readouterr().err
    assert "captioning: 100%" in bar and "| 4/4 [" in bar  # (tqdm may skip drawing 3/4 when the batches are fast)


def test_blip2_example_appends_the_style_tag_once(images, tiny_blip2, run_main):
    (images / "a.txt").write_text("a girl, drawn by KSH drawing style")
    code = run_main(EXAMPLES / "caption_blip2.yaml", "--set", f"config.process.0.folder_path={images}",
                    "--set", f"config.process.0.model={tiny_blip2}", "--set", "config.process.0.dtype=fp32",
                    "--set", "config.process.0.generate_kwargs={min_new_tokens: 3}", "--set", "config.process.0.max_new_tokens=3")
    assert code == 0
    captions = _captions(images)
    assert sorted(captions) == ["a.txt", "b.txt", "d.txt", "sub/c.txt"]
    for text in captions.values():
        assert text.rstrip("\n").endswith(", drawn by KSH drawing style") and text.count("drawn by KSH drawing style") == 1


def test_florence2_example_runs(images, tiny_florence2, run_main):
    code = run_main(EXAMPLES / "caption_florence2.yaml", "--set", f"config.process.0.folder_path={images}",
                    "--set", f"config.process.0.model={tiny_florence2}", "--set", "config.process.0.num_beams=1",
                    "--set", "config.process.0.max_new_tokens=3")
    assert code == 0
    captions = _captions(images)
    assert len(captions) == 4 and all(text.startswith("wcstyle") for name, text in captions.items() if name != "d.txt")


def test_generic_image_to_text_model_runs_and_refuses_a_prompt(images, tiny_vit_gpt2, run_main, messages):
    args = [EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={images}",
            "--set", f"config.process.0.model={tiny_vit_gpt2}", "--set", "config.process.0.max_new_tokens=3"]
    assert run_main(*args) == 2
    assert "takes no prompt" in "\n".join(messages) and "prompt" in "\n".join(messages)
    assert sorted(_captions(images)) == ["d.txt"]
    assert run_main(*args, "--set", "config.process.0.prompt=null", "--set", "config.process.0.num_beams=1",
                    "--set", "config.process.0.generate_kwargs={min_new_tokens: 2}") == 0
    captions = _captions(images)
    assert sorted(captions) == ["a.txt", "b.txt", "d.txt", "sub/c.txt"]
    assert all(text.startswith("anistyle, ") and len(text) > len("anistyle, \n") for name, text in captions.items() if name != "d.txt")


def test_missing_folder_and_missing_model_are_user_errors(tmp_path, images, run_main, messages):
    base = [EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.model={tmp_path / 'no_model'}"]
    assert run_main(*base, "--set", f"config.process.0.folder_path={tmp_path / 'nothing'}") == 2
    assert "does not exist" in "\n".join(messages)
    assert run_main(*base, "--set", f"config.process.0.folder_path={images}") == 2
    assert "cannot load the captioning model" in "\n".join(messages)
    assert sorted(_captions(images)) == ["d.txt"]


def test_dry_run_counts_without_loading(images, run_main, capfd):
    assert run_main("--dry-run", EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={images}") == 0
    printed = capfd.readouterr().out
    assert "5 images in" in printed and "4 to caption (1 keep their .txt files)" in printed


@pytest.fixture
def mixed(tmp_path):
    """make_mixed_dataset's folder plus an uncaptioned image in a ``_`` folder and one with an empty caption file."""
    folder = tmp_path / "mixed"
    make_mixed_dataset(folder)
    scene(30, (32, 32)).save(folder / "_extra" / "new.png")
    scene(31, (32, 32)).save(folder / "empty.png")
    (folder / "empty.txt").write_text(" \n")
    return folder


def _training_sources(folder: Path) -> dict[str, str]:
    scan = scan_dataset(DatasetConfig(folder_path=str(folder)))
    return {r.path.resolve().relative_to(folder.resolve()).as_posix(): r.caption_source for r in scan.records}


def test_dry_run_counts_the_images_and_captions_training_reads(mixed, run_main, capfd):
    args = ["--dry-run", EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={mixed}"]
    assert run_main(*args) == 0
    out = capfd.readouterr().out
    assert "10 images in" in out and "3 to caption (4 keep their .txt files, 3 their metadata.jsonl/csv caption)" in out
    assert run_main(*args, "--set", "config.process.0.overwrite=true") == 0
    assert "7 to caption (0 keep their .txt files, 3 their metadata.jsonl/csv caption)" in capfd.readouterr().out


def test_captions_every_image_training_reads_without_a_caption(mixed, tiny_blip, run_main, messages):
    before = _training_sources(mixed)
    assert sorted(name for name, source in before.items() if source == "default") == ["_extra/new.png", "bare.png", "empty.png"]
    meta_file = (mixed / "meta.txt").read_text()
    args = [EXAMPLES / "caption_blip.yaml", "--set", f"config.process.0.folder_path={mixed}", "--set", f"config.process.0.model={tiny_blip}",
            "--set", "config.process.0.max_new_tokens=3", "--set", "config.process.0.generate_kwargs={min_new_tokens: 2}"]
    assert run_main(*args) == 0
    assert _training_sources(mixed) == {name: "file" if source == "default" else source for name, source in before.items()}
    assert "(3 by metadata.jsonl/csv, which training reads before caption files)" in "\n".join(messages)
    assert run_main(*args, "--set", "config.process.0.overwrite=true") == 0
    assert (mixed / "_cover.txt").read_text().startswith("anistyle, ") and (mixed / "meta.txt").read_text() == meta_file


def test_max_length_and_model_name_or_path_are_accepted_names():
    from toolkit.config.caption import CaptionProcessConfig

    config = CaptionProcessConfig.model_validate({"type": "image_to_text", "folder_path": "x", "model_name_or_path": "m", "max_length": 7})
    assert (config.model, config.max_new_tokens) == ("m", 7)
