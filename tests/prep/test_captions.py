"""Caption files: .txt sidecars, metadata.jsonl and metadata.csv (Hugging Face imagefolder layout), written here
and read back by the training scan's readers."""

import json

import pytest

from toolkit.data.metadata import read_metadata
from toolkit.data.scan import read_caption
from toolkit.errors import EaselError
from toolkit.prep.captions import metadata_text, write_captions

CAPTIONS = {
    "image_1.png": "A HANA_TOFU with a purple background, smiling...",
    "sub/image_2.png": 'a "quoted", comma, caption; with ünïcode 두부',
    "image_3.png": "two\nlines",
    "image_4.png": None,
}


def test_jsonl_layout(tmp_path):
    text = metadata_text(CAPTIONS, "jsonl")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0] == {"file_name": "image_1.png", "text": "A HANA_TOFU with a purple background, smiling..."}
    assert rows[3] == {"file_name": "image_4.png", "text": ""}
    assert "두부" in text


def test_csv_layout_has_the_header_and_quotes_commas():
    lines = metadata_text(CAPTIONS, "csv").splitlines()
    assert lines[0] == "file_name,text"
    assert lines[1] == 'image_1.png,"A HANA_TOFU with a purple background, smiling..."'


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_metadata_round_trip(tmp_path, kind):
    write_captions(tmp_path, CAPTIONS, [kind], "txt")
    read = read_metadata(tmp_path / f"metadata.{kind}")
    expected = {(tmp_path / name).resolve(): caption or "" for name, caption in CAPTIONS.items()}
    assert read == expected


def test_sidecars_round_trip_and_skip_missing_captions(tmp_path):
    write_captions(tmp_path, CAPTIONS, ["txt"], "caption")
    assert read_caption(tmp_path / "sub/image_2.png", "caption", {}) == (CAPTIONS["sub/image_2.png"], "file")
    assert (tmp_path / "image_3.caption").read_text() == "two\nlines\n"
    assert read_caption(tmp_path / "image_3.png", "caption", {}) == ("two lines", "file")
    assert not (tmp_path / "image_4.caption").exists()
    assert read_caption(tmp_path / "image_4.png", "caption", {}) is None


def test_reading_accepts_image_and_caption_columns(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"image": "a.png", "caption": "first"}\n\n{"file_name": "b.png", "text": "second"}\n')
    assert read_metadata(tmp_path / "metadata.jsonl") == {(tmp_path / "a.png").resolve(): "first", (tmp_path / "b.png").resolve(): "second"}


def test_bad_metadata_is_a_user_error_with_the_line(tmp_path):
    meta = tmp_path / "metadata.jsonl"
    meta.write_text('{"file_name": "a.png", "text": "ok"}\nnot json\n')
    with pytest.raises(EaselError, match="line 2"):
        read_metadata(meta)
    meta.write_text('{"text": "no file"}\n')
    with pytest.raises(EaselError, match="file_name"):
        read_metadata(meta)


def test_sidecar_with_bom_and_trailing_newline(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffa caption\n".encode("utf-8"))
    assert read_caption(tmp_path / "a.png", "txt", {}) == ("a caption", "file")
