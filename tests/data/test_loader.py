"""TrainData: entries, determinism, exact resume, distributed sharding, report, batch contents."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.data.helpers import dataset, synthetic_data, write_image
from toolkit.data.loader import LoaderPosition, TrainData
from toolkit.errors import EaselError

SIZES = [(64, 64), (64, 64), (96, 64), (96, 64), (96, 64), (64, 96), (128, 64), (80, 80), (64, 64), (96, 64), (72, 64)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i, size in enumerate(SIZES):
        write_image(tmp_path / f"img{i:02d}.png", size=size, color=(20 * i, 100, 200 - 10 * i),
                    caption=f"item {i}, red, round, small")
    return tmp_path


def make(folder: Path, batch_size: int = 2, seed: int = 7, rank: int = 0, world_size: int = 1, **fields) -> TrainData:
    fields.setdefault("resolution", [64])
    return TrainData([dataset(folder, **fields)], trigger_word="ohwx", batch_size=batch_size, seed=seed,
                     bucket_divisibility=16, rank=rank, world_size=world_size)


def keys(data: TrainData, start: LoaderPosition, count: int) -> list[tuple]:
    """What identifies a batch: paths, captions, crops, and the pixels' checksum."""
    out = []
    for batch, position in itertools.islice(data.batches(start), count):
        out.append((tuple(map(str, batch.paths)), tuple(batch.captions), tuple(batch.image_info),
                    round(float(batch.pixels.sum()), 3), position.epoch, position.index))
    return out


def test_entries_cover_every_image_once_per_resolution_and_repeat(folder):
    data = make(folder, resolution=[64, 96], num_repeats=2)
    per_image = Counter((entry.record, entry.resolution) for entry in data.entries)
    assert set(per_image.values()) == {2}
    assert len(per_image) == len(SIZES) * 2
    for epoch in range(3):
        seen = Counter(item for chunk in data.plan(epoch) for item in chunk)
        assert seen == Counter(range(len(data.entries)))
        assert len(data.plan(epoch)) == data.steps_per_epoch()


def test_every_batch_holds_one_bucket(folder):
    data = make(folder, batch_size=3, resolution=[64, 96], flip_x=True, random_crop=True)
    for batch, _ in itertools.islice(data.batches(), 2 * data.steps_per_epoch()):
        assert len({info.target_size for info in batch.image_info}) == 1
        height, width = batch.image_info[0].target_size
        assert batch.pixels.shape == (len(batch.paths), 3, height, width)
        assert batch.pixels.dtype == torch.float32
        assert -1.0 <= batch.pixels.min() and batch.pixels.max() <= 1.0
        assert batch.latents is None and batch.cond is None
        assert all(caption.startswith("ohwx item") for caption in batch.captions)


def test_same_seed_same_batches_other_seed_other_order(folder):
    first = keys(make(folder, flip_x=True, shuffle_tokens=True, keep_tokens=1), LoaderPosition(), 12)
    again = keys(make(folder, flip_x=True, shuffle_tokens=True, keep_tokens=1), LoaderPosition(), 12)
    other = keys(make(folder, seed=8, flip_x=True, shuffle_tokens=True, keep_tokens=1), LoaderPosition(), 12)
    assert first == again
    assert first != other


def test_epochs_differ(folder):
    data = make(folder)
    assert data.plan(0) != data.plan(1)


@pytest.mark.parametrize("stop", [1, 4, 6, 7, 9])
def test_resume_continues_exactly(folder, stop):
    options = dict(flip_x=True, flip_y=True, random_crop=True, shuffle_tokens=True, token_dropout_rate=0.3,
                   caption_dropout_rate=0.2, resolution=[64, 96])
    whole = keys(make(folder, **options), LoaderPosition(), 16)
    position = LoaderPosition(whole[stop - 1][4], whole[stop - 1][5])
    resumed = keys(make(folder, **options), position, 16 - stop)
    assert resumed == whole[stop:]


def test_positions_run_over_epochs(folder):
    data = make(folder)
    steps = data.steps_per_epoch()
    positions = [position for _, position in itertools.islice(data.batches(), steps + 2)]
    assert positions[steps - 2] == LoaderPosition(0, steps - 1)
    assert positions[steps - 1] == LoaderPosition(1, 0)
    assert positions[steps] == LoaderPosition(1, 1)
    late = next(data.batches(LoaderPosition(0, steps)))[1]
    assert late == LoaderPosition(1, 1)


def test_two_ranks_are_disjoint_and_make_the_global_batch(folder):
    single = make(folder, batch_size=4)
    ranks = [make(folder, batch_size=2, rank=rank, world_size=2) for rank in range(2)]
    assert ranks[0].steps_per_epoch() == ranks[1].steps_per_epoch() == single.steps_per_epoch()
    for epoch in range(2):
        plan = ranks[0].plan(epoch)
        assert plan == ranks[1].plan(epoch)
        groups = {item: group for group in ranks[0].groups.values() for item in group}
        for number, chunk in enumerate(plan):
            mine = [ranks[rank].share(chunk) for rank in range(2)]
            assert len(mine[0]) == len(mine[1]) >= 1
            assert sorted(mine[0] + mine[1]) == sorted(chunk)
            if len(groups[chunk[0]]) >= len(chunk):
                assert not set(mine[0]) & set(mine[1])
            else:
                assert set(chunk) == set(groups[chunk[0]])
            reference = single.plan(epoch)[number]
            if len(reference) % 2 == 0:
                assert sorted(chunk) == sorted(reference)
            else:
                assert set(reference) <= set(chunk) and len(chunk) == len(reference) + 1


def test_ranks_see_their_share_in_batches(folder):
    streams = [list(itertools.islice(make(folder, batch_size=2, rank=rank, world_size=2).batches(), 6)) for rank in range(2)]
    reference = list(itertools.islice(make(folder, batch_size=4).batches(), 6))
    disjoint = 0
    for (zero, pos0), (one, pos1), (whole, pos) in zip(*streams, reference):
        assert pos0 == pos1 == pos
        assert set(zero.paths) | set(one.paths) >= set(whole.paths)
        assert zero.pixels.shape == one.pixels.shape
        if len(whole.paths) >= 2:
            assert not set(zero.paths) & set(one.paths)
            disjoint += 1
    assert disjoint >= 2


def test_report_lines(folder):
    (folder / "broken.jpg").write_bytes(b"")
    write_image(folder / "tiny.png", size=(10, 200))
    write_image(folder / "nocap.png", size=(64, 64))
    lines = make(folder, resolution=[64, 96], num_repeats=3, default_caption="thing", caption_dropout_rate=0.1,
                 cache_latents_to_disk=True).report()
    text = "\n".join(lines)
    assert lines[0] == f"- {folder}: {len(SIZES) + 1} images"
    assert "captions: 11 from .txt files, 1 default ('thing'); trigger 'ohwx' added where missing; caption dropout 0.1" in text
    assert "skipped 2: empty file 1 (broken.jpg); smaller than 16px on a side 1 (tiny.png)" in text
    assert f"resolution 64, 96 x repeats 3 -> {(len(SIZES) + 1) * 2 * 3} items per epoch" in text
    assert "buckets @64: 64x64 x6, 80x48 x5, 48x80 x1; @96: 64x64 x5, 96x64 x4, 64x96 x1, 80x80 x1, 128x64 x1" in text
    assert f"latents: cached on disk in {folder / '_latent_cache' / 'latents'}" in text
    assert lines[-1].startswith("steps per epoch: ")


def test_empty_dataset_names_folder_and_reasons(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_text("x")
    with pytest.raises(EaselError) as caught:
        make(tmp_path)
    assert str(caught.value) == (f"dataset '{tmp_path}' (datasets[0].folder_path) has no usable images. Dropped: "
                                 "empty file 1 (a.jpg); not an image 1 (b.png). Fix or replace those files, or add "
                                 "usable images.")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(EaselError, match=r"no .jpg/.jpeg/.png/.webp/.bmp files found .*same-stem .txt files"):
        make(empty)


def test_missing_folder_fails_at_construction(tmp_path):
    with pytest.raises(EaselError, match="does not exist"):
        make(tmp_path / "missing")


def test_regularization_set_and_dataset_trigger(tmp_path):
    write_image(tmp_path / "main" / "a.png", caption="a dog")
    write_image(tmp_path / "reg" / "b.png", caption="a dog")
    data = TrainData([dataset(tmp_path / "main", trigger_word="sks"), dataset(tmp_path / "reg", is_reg=True)],
                     trigger_word="ohwx", batch_size=2, seed=0, bucket_divisibility=16)
    batch, _ = next(data.batches())
    assert sorted(batch.captions) == ["a dog", "sks a dog"]


def test_a_dataset_batch_size_overrides_the_process_one_for_its_own_batches(tmp_path):
    """ai-toolkit's datasets[].batch_size: each dataset's batches hold its own count (the last one may be short),
    datasets of different sizes never share a batch, and one without it keeps train.batch_size."""
    for name, count in (("big", 7), ("small", 5)):
        for i in range(count):
            write_image(tmp_path / name / f"{name}{i}.png", size=(64, 64), caption=f"{name} {i}")
    configs = [dataset(tmp_path / "big", resolution=[64], batch_size=3), dataset(tmp_path / "small", resolution=[64])]
    data = TrainData(configs, trigger_word=None, batch_size=2, seed=1, bucket_divisibility=16)
    assert data.steps_per_epoch() == 3 + 3  # ceil(7 / 3) + ceil(5 / 2)
    sizes: dict[str, list[int]] = {"big": [], "small": []}
    for batch, position in itertools.islice(data.batches(), data.steps_per_epoch()):
        (kind,) = {Path(path).parent.name for path in batch.paths}  # one dataset per batch
        sizes[kind].append(len(batch.paths))
        assert batch.pixels.shape[0] == len(batch.paths)
    assert sorted(sizes["big"]) == [1, 3, 3] and sorted(sizes["small"]) == [1, 2, 2]
    assert data.report()[-1].startswith("steps per epoch: 6 (batch 2/3 by dataset, ")
    same = TrainData([dataset(tmp_path / "big", resolution=[64], batch_size=2), dataset(tmp_path / "small", resolution=[64])],
                     trigger_word=None, batch_size=2, seed=1, bucket_divisibility=16)
    plain = TrainData([dataset(tmp_path / "big", resolution=[64]), dataset(tmp_path / "small", resolution=[64])],
                      trigger_word=None, batch_size=2, seed=1, bucket_divisibility=16)
    assert same.plan(0) == plain.plan(0)  # naming the process's own size changes nothing


def test_a_dataset_batch_size_is_shared_out_over_ranks(tmp_path):
    for i in range(8):
        write_image(tmp_path / "d" / f"x{i}.png", size=(64, 64), caption=f"x {i}")
    ranks = [TrainData([dataset(tmp_path / "d", resolution=[64], batch_size=2)], trigger_word=None, batch_size=1,
                       seed=3, bucket_divisibility=16, rank=rank, world_size=2) for rank in range(2)]
    assert ranks[0].steps_per_epoch() == 2  # 8 entries in global batches of 2 x 2 ranks
    for chunk in ranks[0].plan(0):
        shares = [ranks[rank].share(chunk) for rank in range(2)]
        assert len(shares[0]) == len(shares[1]) == 2 and not set(shares[0]) & set(shares[1])


@pytest.mark.parametrize("axis,dim", [("flip_x", -1), ("flip_y", -2)])
def test_flips_change_pixels_and_image_info(folder, axis, dim):
    data = make(folder, batch_size=1, **{axis: True})
    plain = make(folder, batch_size=1)
    flipped = 0
    for (batch, _), (reference, _) in itertools.islice(zip(data.batches(), plain.batches()), 20):
        assert batch.paths == reference.paths
        if torch.equal(batch.pixels, reference.pixels):
            continue
        assert torch.equal(batch.pixels, reference.pixels.flip(dim))
        flipped += 1
    assert 3 <= flipped <= 17


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(64, 400), st.integers(64, 400)), min_size=1, max_size=30),
       world_size=st.integers(1, 4), batch=st.integers(1, 4), epoch=st.integers(0, 20))
def test_sharding_properties(sizes, world_size, batch, epoch):
    """All ranks agree on the plan; shares have equal size, rebuild the global batch, and are
    disjoint unless the bucket holds fewer entries than the padded batch; every entry is used."""
    ranks = [synthetic_data(sizes, resolutions=[256], divisibility=32, batch_size=batch, rank=rank,
                            world_size=world_size) for rank in range(world_size)]
    plan = ranks[0].plan(epoch)
    assert all(other.plan(epoch) == plan for other in ranks[1:])
    assert len(plan) == ranks[0].steps_per_epoch()
    group_of = {item: group for group in ranks[0].groups.values() for item in group}
    for chunk in plan:
        shares = [data.share(chunk) for data in ranks]
        assert len({len(share) for share in shares}) == 1 and len(shares[0]) >= 1
        assert sum(shares, []) == chunk
        assert len(chunk) <= batch * world_size
        if len(group_of[chunk[0]]) >= len(chunk):
            assert len(set(chunk)) == len(chunk)
    assert {item for chunk in plan for item in chunk} == set(range(len(ranks[0].entries)))


def test_image_replaced_after_the_scan_is_reported_not_distorted(folder):
    data = make(folder, batch_size=1)
    write_image(folder / "img00.png", size=(40, 120))
    with pytest.raises(EaselError, match="img00.png: size differs from the scan"):
        list(itertools.islice(data.batches(), data.steps_per_epoch()))


def test_random_crop_moves_per_epoch_center_crop_does_not(folder):
    """img10 is 72x64: its 64x64 bucket leaves 8 spare columns."""
    def crops(data: TrainData) -> set[tuple[int, int]]:
        found = set()
        for epoch in range(12):
            for item, entry in enumerate(data.entries):
                if data.scans[0].records[entry.record].path.name == "img10.png":
                    found.add(data.draw(item, epoch).placement.image_info().crop_top_left)
        return found

    assert crops(make(folder)) == {(0, 4)}
    moved = crops(make(folder, random_crop=True))
    assert len(moved) >= 4 and all(top == 0 and 0 <= left <= 8 for top, left in moved)


def test_order_and_draws_do_not_depend_on_the_hash_seed(folder):
    """Resume happens in a new process: the plan and every random draw must not use Python's hash()."""
    import os
    import subprocess
    import sys

    code = ("import sys; from tests.data.helpers import dataset; from toolkit.data.loader import TrainData; "
            "d = TrainData([dataset(sys.argv[1], resolution=[64, 96], flip_x=True, random_crop=True, shuffle_tokens=True, "
            "caption_dropout_rate=0.3)], trigger_word='ohwx', batch_size=2, seed=5, bucket_divisibility=16); "
            "print([(chunk, [(x.caption, x.flip_x, x.placement.crop) for x in map(lambda i: d.draw(i, e), chunk)]) "
            "for e in range(3) for chunk in d.plan(e)])")
    root = Path(__file__).resolve().parents[2]
    outputs = {subprocess.run([sys.executable, "-c", code, str(folder)], cwd=root, capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1 and len(next(iter(outputs))) > 100
