"""Aspect buckets: divisibility, area bound, no upscaling, aspect error, crops and micro-conditioning."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.data.helpers import synthetic_data
from toolkit.data.buckets import choose_bucket, cover_size, fit_image, place
from toolkit.errors import EaselError

DIVISIBILITY = st.sampled_from([8, 16, 32, 64])
RESOLUTION = st.integers(64, 1536)
SIDE = st.integers(1, 6000)


@settings(max_examples=600, deadline=None)
@given(width=SIDE, height=SIDE, resolution=RESOLUTION, d=DIVISIBILITY)
def test_bucket_is_divisible_bounded_and_never_upscales(width, height, resolution, d):
    bucket = choose_bucket(width, height, resolution, d)
    if width < d or height < d or resolution < d:
        assert bucket is None
        return
    assert bucket is not None
    bw, bh = bucket
    assert bw % d == 0 and bh % d == 0 and bw >= d and bh >= d
    assert bw * bh <= resolution * resolution
    assert bw <= width and bh <= height
    resized = cover_size(width, height, bucket)
    assert resized[0] >= bw and resized[1] >= bh
    assert resized[0] <= width and resized[1] <= height


@settings(max_examples=600, deadline=None)
@given(width=SIDE, height=SIDE, resolution=RESOLUTION, d=DIVISIBILITY)
def test_aspect_error_is_bounded(width, height, resolution, d):
    """Where the ideal bucket (area min(r^2, w*h), the image's aspect) has both sides >= d, the
    aspect error is at most 2*log(1 + d / shorter bucket side): a quantization error of one step."""
    area = min(resolution * resolution, width * height)
    aspect = width / height
    if min(math.sqrt(area * aspect), math.sqrt(area / aspect)) < d or min(width, height) < d:
        return
    bw, bh = choose_bucket(width, height, resolution, d)
    assert abs(math.log(bw / bh / aspect)) <= 2 * math.log(1 + d / min(bw, bh)) + 1e-12


@settings(max_examples=300, deadline=None)
@given(width=SIDE, height=SIDE, resolution=RESOLUTION, d=DIVISIBILITY)
def test_bucket_is_the_best_candidate(width, height, resolution, d):
    """No fitting bucket of maximal height per width has a smaller aspect error."""
    bucket = choose_bucket(width, height, resolution, d)
    if bucket is None:
        return
    aspect = width / height
    area = min(resolution * resolution, width * height)
    error = abs(math.log(bucket[0] / bucket[1] / aspect))
    for bw in range(d, width // d * d + 1, d):
        bh = min(height // d * d, area // bw // d * d)
        if bh >= d:
            assert error <= abs(math.log(bw / bh / aspect)) + 1e-12


@settings(max_examples=600, deadline=None)
@given(width=SIDE, height=SIDE, resolution=RESOLUTION, d=DIVISIBILITY, limit=st.sampled_from([1.0, 1.5, 2.0, 4.0, 7.3]))
def test_buckets_respect_the_aspect_limit(width, height, resolution, d, limit):
    """Within the aspect limit every image with both sides >= d (and a resolution >= d) still gets a bucket that is
    divisible, bounded and never upscaled, and an image within the limit keeps its unlimited bucket's aspect."""
    bucket = choose_bucket(width, height, resolution, d, max_aspect=limit)
    if width < d or height < d or resolution < d:
        assert bucket is None
        return
    assert bucket is not None
    bw, bh = bucket
    assert bw % d == 0 and bh % d == 0 and bw >= d and bh >= d
    assert max(bw / bh, bh / bw) <= limit + 1e-9
    assert bw * bh <= resolution * resolution and bw <= width and bh <= height
    if max(width / height, height / width) <= limit:
        free = choose_bucket(width, height, resolution, d)
        assert max(free[0] / free[1], free[1] / free[0]) > limit or bucket == free


def test_an_extreme_image_is_cropped_to_the_limit_not_given_a_degenerate_bucket():
    assert choose_bucket(20000, 20, 1024, 16) == (16000, 16)  # 1000 latent patches wide: past Z-Image's rope (512)
    assert choose_bucket(20000, 20, 1024, 16, max_aspect=4.0) == (64, 16)
    assert choose_bucket(20, 20000, 1024, 16, max_aspect=4.0) == (16, 64)
    assert choose_bucket(3000, 600, 1024, 64, max_aspect=4.0) == (2048, 512)
    assert choose_bucket(20000, 10, 1024, 16, max_aspect=4.0) is None


def test_known_buckets():
    assert choose_bucket(1024, 1024, 1024, 64) == (1024, 1024)
    assert choose_bucket(3000, 2000, 1024, 64) == (1216, 832)
    assert choose_bucket(1920, 1080, 1024, 64) == (1344, 768)
    assert choose_bucket(300, 200, 512, 8) == (296, 200)
    assert choose_bucket(300, 200, 512, 64) == (256, 192)
    assert choose_bucket(40, 400, 512, 64) is None


def test_same_image_gets_one_bucket_per_resolution_and_small_ones_share():
    big = [choose_bucket(2000, 1500, r, 16) for r in (512, 768, 1024)]
    assert len(set(big)) == 3
    small = [choose_bucket(300, 300, r, 16) for r in (512, 768, 1024)]
    assert small == [(288, 288)] * 3


def test_center_and_random_crop():
    placement = place((400, 200), (128, 128))
    assert placement.resized == (256, 128) and placement.crop == (0, 64)
    crops = {place((400, 200), (128, 128), random.Random(seed)).crop for seed in range(40)}
    assert all(top == 0 and 0 <= left <= 128 for top, left in crops) and len(crops) > 10


def test_image_info_for_micro_conditioning():
    placement = place((400, 200), (128, 96), random.Random(0))
    info = placement.image_info()
    assert info.original_size == (200, 400)
    assert info.target_size == (96, 128)
    assert info.crop_top_left == placement.crop
    flipped = placement.image_info(flip_x=True)
    assert flipped.crop_top_left == (placement.crop[0], placement.resized[0] - placement.crop[1] - 128)


def test_fit_image_resizes_crops_and_flips():
    array = np.zeros((200, 400, 3), dtype=np.uint8)
    array[:, :200] = 255
    image = Image.fromarray(array)
    placement = place((400, 200), (128, 128))
    out = np.asarray(fit_image(image, placement))
    assert out.shape == (128, 128, 3)
    assert out[:, :60].min() == 255 and out[:, 68:].max() == 0
    flipped = np.asarray(fit_image(image, placement, flip_x=True))
    assert np.array_equal(flipped, out[:, ::-1])
    upside = np.asarray(fit_image(image, placement, flip_y=True))
    assert np.array_equal(upside, out[::-1])


@pytest.mark.parametrize("size", [(1000, 750), (801, 603)])
def test_fit_image_from_reduced_decode_matches_full_size(size):
    array = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    full = Image.fromarray(array)
    placement = place(size, choose_bucket(*size, 256, 16))
    half = full.resize((size[0] // 2, size[1] // 2))
    assert fit_image(half, placement).size == fit_image(full, placement).size == placement.bucket


SIZES = st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 3000)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(sizes=SIZES, resolutions=st.lists(st.integers(64, 1024), min_size=1, max_size=3, unique=True),
       d=DIVISIBILITY, repeats=st.integers(1, 3), batch=st.integers(1, 5), epoch=st.integers(0, 50))
def test_every_image_lands_in_exactly_one_bucket_per_resolution(sizes, resolutions, d, repeats, batch, epoch):
    """Over TrainData (with a synthetic scan): one entry per image, resolution and repeat, in the
    group of its bucket, and each epoch's plan uses every entry exactly once."""
    usable = [(w, h) for w, h in sizes if w >= d and h >= d]
    settings_ = dict(resolutions=resolutions, divisibility=d, batch_size=batch, repeats=repeats)
    if not usable:
        with pytest.raises(EaselError, match="no usable images"):
            synthetic_data(sizes, **settings_)
        return
    data = synthetic_data(sizes, **settings_)
    assert len(data.scans[0].records) == len(usable)
    placed = {}
    for item, entry in enumerate(data.entries):
        record = data.scans[0].records[entry.record]
        expected = choose_bucket(record.width, record.height, entry.resolution, d, max_aspect=data.datasets[0].max_aspect_ratio)
        assert entry.placement.bucket == expected
        assert item in data.groups[entry.group]
        placed.setdefault((entry.record, entry.resolution), []).append(entry.repeat)
    assert len(placed) == len(usable) * len(data.datasets[0].resolution)
    assert all(sorted(reps) == list(range(repeats)) for reps in placed.values())
    assert sum(len(items) for items in data.groups.values()) == len(data.entries)
    used = sorted(item for chunk in data.plan(epoch) for item in chunk)
    assert used == list(range(len(data.entries)))
    assert all(len({data.entries[i].group for i in chunk}) == 1 for chunk in data.plan(epoch))
