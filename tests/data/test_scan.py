"""Dataset sources: caption files, subfolders, metadata.jsonl / metadata.csv, defaults, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.helpers import dataset, write_image, write_png_header
from toolkit.data.scan import list_dataset, read_caption, scan_dataset
from toolkit.errors import EaselError


def _captions(scan) -> dict[str, tuple[str, str]]:
    return {record.path.relative_to(scan.folder).as_posix(): (record.caption, record.caption_source)
            for record in scan.records}


def test_caption_files_and_subfolders(tmp_path):
    write_image(tmp_path / "a.png", caption="a red square")
    write_image(tmp_path / "nested" / "deep" / "b.jpg", size=(50, 70), caption="  line one\nline two  ")
    write_image(tmp_path / "c.webp", caption="")
    write_image(tmp_path / ".hidden" / "d.png", caption="hidden")
    write_image(tmp_path / "_latent_cache" / "e.png", caption="cache")
    write_image(tmp_path / ".dot.png", caption="hidden file")
    scan = scan_dataset(dataset(tmp_path, default_caption="fallback"))
    assert _captions(scan) == {
        "a.png": ("a red square", "file"),
        "c.webp": ("fallback", "default"),
        "nested/deep/b.jpg": ("line one line two", "file"),
    }
    assert scan.captions == 2
    assert [(r.width, r.height) for r in scan.records] == [(64, 48), (64, 48), (50, 70)]
    assert scan.skipped == {}


def test_other_caption_extension_and_custom_cache_dir_inside_folder(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("from caption file")
    (tmp_path / "a.txt").write_text("not this one")
    write_image(tmp_path / "cache_here" / "x.png")
    write_image(tmp_path / "_latent_cache" / "y.png")
    scan = scan_dataset(dataset(tmp_path, caption_ext=".caption", cache_dir=str(tmp_path / "cache_here")))
    assert _captions(scan) == {"a.png": ("from caption file", "file")}


def test_metadata_jsonl(tmp_path):
    write_image(tmp_path / "train" / "a.png")
    write_image(tmp_path / "train" / "b.png", caption="caption file loses")
    write_image(tmp_path / "c.png")
    rows = [{"file_name": "train/a.png", "text": "first"}, {"file_name": "train/b.png", "text": "second"},
            {"file_name": "c.png", "text": None}, {"file_name": "missing.png", "text": "x"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    scan = scan_dataset(dataset(tmp_path, default_caption="dflt"))
    assert _captions(scan) == {"c.png": ("dflt", "default"), "train/a.png": ("first", "metadata"),
                               "train/b.png": ("second", "metadata")}
    assert scan.skipped == {"listed in metadata, file missing": ["missing.png"]}


def test_metadata_csv_with_image_column(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "metadata.csv").write_text('image,text\na.png,"a cat, sitting"\nb.png,\n', encoding="utf-8")
    scan = scan_dataset(dataset(tmp_path, default_caption="dflt"))
    assert _captions(scan) == {"a.png": ("a cat, sitting", "metadata"), "b.png": ("dflt", "default")}


def test_metadata_in_subfolder_is_relative_to_its_folder(tmp_path):
    write_image(tmp_path / "part" / "a.png")
    write_image(tmp_path / "part" / "deeper" / "b.png")
    rows = [{"file_name": "a.png", "text": "sub"}, {"image": "deeper/b.png", "caption": "by image column"}]
    (tmp_path / "part" / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    assert _captions(scan_dataset(dataset(tmp_path))) == {"part/a.png": ("sub", "metadata"),
                                                          "part/deeper/b.png": ("by image column", "metadata")}


def test_metadata_errors_name_the_file_and_line(tmp_path):
    write_image(tmp_path / "a.png")
    meta = tmp_path / "metadata.jsonl"
    meta.write_text('{"file_name": "a.png", "text": "ok"}\n{broken\n')
    with pytest.raises(EaselError, match=r"metadata.jsonl, line 2: not valid JSON"):
        scan_dataset(dataset(tmp_path))
    meta.write_text('{"name": "a.png", "text": "ok"}\n')
    with pytest.raises(EaselError, match=r"line 1: no 'file_name' \(or 'image'\) value; columns found: name, text"):
        scan_dataset(dataset(tmp_path))
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,x\n")
    meta.write_text('{"file_name": "a.png", "text": "ok"}\n')
    with pytest.raises(EaselError, match="holds both"):
        scan_dataset(dataset(tmp_path))


def test_bad_files_are_counted_by_reason(tmp_path):
    write_image(tmp_path / "good.png", caption="fine")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("nope")
    data = (write_image(tmp_path / "cut.png", size=(64, 64))).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    write_image(tmp_path / "anim.gif", fmt="GIF")
    (tmp_path / "notes.md").write_text("ignored quietly")
    (tmp_path / "sub" / "gone.jpg").parent.mkdir()
    (tmp_path / "sub" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    write_png_header(tmp_path / "sub" / "bomb.png", 30_000, 30_000)
    scan = scan_dataset(dataset(tmp_path))
    assert [r.path.name for r in scan.records] == ["good.png"]
    assert scan.skipped == {"empty file": ["empty.jpg"], "not an image": ["text.png"], "truncated": ["cut.png"],
                            "unsupported format (.gif)": ["anim.gif"], "broken symbolic link": ["sub/gone.jpg"],
                            "too large (decompression bomb?)": ["sub/bomb.png"]}
    assert "empty file 1 (empty.jpg)" in scan.skipped_summary()


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(EaselError, match="does not exist"):
        scan_dataset(dataset(tmp_path / "nowhere"))


def test_skipped_summary_shortens_long_lists(tmp_path):
    for i in range(5):
        (tmp_path / f"e{i}.png").write_bytes(b"")
    scan = scan_dataset(dataset(tmp_path))
    assert scan.skipped_summary() == "empty file 5 (e0.png, e1.png, e2.png, +2 more)"


def test_unicode_caption_file(tmp_path: Path):
    write_image(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("café, naïve".encode() + b"\xff")
    assert _captions(scan_dataset(dataset(tmp_path)))["a.png"][0].startswith("café, naïve")


def test_caption_file_with_a_byte_order_mark(tmp_path: Path):
    write_image(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("\ufeffa caption\n".encode())
    assert _captions(scan_dataset(dataset(tmp_path))) == {"a.png": ("a caption", "file")}


def test_read_caption_prefers_metadata_text_then_a_non_empty_file(tmp_path):
    for name, text in (("a.png", "file a"), ("b.png", "file b"), ("c.png", " \n "), ("d.png", None)):
        write_image(tmp_path / name, caption=text)
    metadata = {(tmp_path / "a.png").resolve(): "meta  a\n", (tmp_path / "b.png").resolve(): " ", (tmp_path / "c.png").resolve(): None}
    found = {name: read_caption(tmp_path / name, "txt", metadata) for name in ("a.png", "b.png", "c.png", "d.png")}
    assert found == {"a.png": ("meta a", "metadata"), "b.png": ("file b", "file"), "c.png": None, "d.png": None}


def test_list_dataset_is_what_scan_dataset_reads(tmp_path):
    write_image(tmp_path / "a.png", caption="a")
    write_image(tmp_path / "_extra" / "b.png")
    write_image(tmp_path / ".hidden" / "c.png")
    write_image(tmp_path / "skip_me" / "d.png")
    write_image(tmp_path / "anim.gif", fmt="GIF")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": ".hidden/c.png", "text": "listed"}\n')
    listing = list_dataset(tmp_path, [tmp_path / "skip_me"])
    assert [p.relative_to(tmp_path).as_posix() for p in listing.files] == ["_extra/b.png", "a.png", "a.txt", "anim.gif", "metadata.jsonl"]
    assert listing.images == [tmp_path / "_extra" / "b.png", tmp_path / "a.png", (tmp_path / ".hidden" / "c.png").resolve()]
    assert listing.skipped == [(tmp_path / "anim.gif", "unsupported format (.gif)")]
    scan = scan_dataset(dataset(tmp_path, cache_dir=str(tmp_path / "skip_me")))
    assert scan.images == listing.images
