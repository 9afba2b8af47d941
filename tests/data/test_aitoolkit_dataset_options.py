"""ai-toolkit's dataset options: square_crop / buckets: false, scale, random_scale, random_triggers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.data.helpers import dataset, write_image
from toolkit.config.blocks import DatasetConfig
from toolkit.data.captions import CaptionRules
from toolkit.data.loader import LoaderPosition, TrainData
from toolkit.errors import EaselError


def _data(folder: Path, **fields) -> TrainData:
    fields.setdefault("resolution", [64])
    return TrainData([dataset(folder, **fields)], trigger_word="ohwx", batch_size=1, seed=3, bucket_divisibility=16)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_image(tmp_path / "wide.png", size=(128, 64), caption="wide")
    write_image(tmp_path / "small.png", size=(40, 40), caption="small")
    return tmp_path


def _buckets(data: TrainData) -> dict[str, tuple[int, int]]:
    return {data.scans[0].records[e.record].path.name: e.placement.bucket for e in data.entries}


@pytest.mark.parametrize("field", [{"square_crop": True}, {"buckets": False}])
def test_square_crop_and_no_buckets_train_every_image_as_the_square(field, folder):
    data = _data(folder, **field)
    assert _buckets(data) == {"wide.png": (64, 64), "small.png": (64, 64)}
    batch, _ = next(data.batches(LoaderPosition()))
    assert tuple(batch.pixels.shape[-2:]) == (64, 64)
    assert _buckets(_data(folder)) == {"wide.png": (80, 48), "small.png": (32, 32)}, "aspect buckets, no upscaling"


def test_scale_gives_smaller_buckets(folder):
    assert _buckets(_data(folder, scale=0.5, resolution=[128]))["wide.png"] == (64, 32)
    assert _buckets(_data(folder, resolution=[128]))["wide.png"] == (128, 64)


def test_random_scale_is_ai_toolkits_random_crop():
    assert DatasetConfig(folder_path="x", random_scale=True).random_crop
    with pytest.raises(ValueError, match="random_crop cannot be used with cache_latents"):
        DatasetConfig(folder_path="x", random_scale=True, cache_latents=True)


@pytest.mark.parametrize("most,counts", [(1, {1}), (3, {0, 1, 2, 3})])
def test_random_triggers_add_their_count_after_the_trigger(most, counts):
    rules = CaptionRules.from_config(DatasetConfig(folder_path="x", random_triggers=["red", "blue", "green"],
                                                   random_triggers_max=most), "ohwx")
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        parts = rules.apply("a cat", rng).split(", ")
        assert parts[0] == "ohwx a cat" and set(parts[1:]) <= {"red", "blue", "green"} and len(set(parts[1:])) == len(parts) - 1
        seen.add(len(parts) - 1)
    assert seen == counts
    assert rules.possible("a cat") is None, "text caches refuse captions that vary"


def test_random_triggers_from_a_file(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("one\n\n two \n", encoding="utf-8")
    rules = CaptionRules.from_config(DatasetConfig(folder_path="x", random_triggers=str(words)), None)
    assert rules.random_triggers == ("one", "two")
    with pytest.raises(EaselError, match="random_triggers 'nope.txt' is no file"):
        CaptionRules.from_config(DatasetConfig(folder_path="x", random_triggers="nope.txt"), None)


def _masked(tmp_path: Path) -> Path:
    from PIL import Image

    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (128, 64), 0).save(masks / "wide.png")
    return masks


def test_batches_carry_masks_loss_weights_and_one_network_weight(folder, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("outside")  # not inside the dataset folder, which is read with its subfolders
    reg = tmp_path / "reg"
    write_image(reg / "r.png", size=(64, 64), caption="reg")
    configs = [dataset(folder, resolution=[64], mask_path=str(_masked(tmp_path)), mask_min_value=0.25, loss_multiplier=2.0),
               dataset(reg, resolution=[64], is_reg=True, network_weight=0.5)]
    data = TrainData(configs, trigger_word=None, batch_size=4, seed=1, bucket_divisibility=16, reg_weight=3.0)
    seen = {}
    for batch, position in data.batches(LoaderPosition()):
        for index, path in enumerate(batch.paths):
            weight = 1.0 if batch.loss_weights is None else float(batch.loss_weights[index])
            floor = None if batch.masks is None else float(batch.masks[index].min())
            seen[path.name] = (weight, floor, batch.network_weight)
        if position.epoch:
            break
    assert seen == {"wide.png": (2.0, 0.25, 1.0), "small.png": (2.0, 1.0, 1.0), "r.png": (3.0, None, 0.5)}
    with pytest.raises(EaselError, match="mask_path 'nowhere' is not a folder"):
        TrainData([dataset(folder, mask_path="nowhere")], trigger_word=None, batch_size=1, seed=1, bucket_divisibility=16)
