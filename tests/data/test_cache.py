"""Latent and text caches: keys, invalidation, warm runs that encode nothing, flips, unloading."""

from __future__ import annotations

import itertools
import threading
import zlib
from pathlib import Path

import pytest
import torch

from tests.data.helpers import FakeAdapter, dataset, write_image
from toolkit.data.buckets import place
from toolkit.data.cache import latent_key, text_key
from toolkit.data.loader import TrainData
from toolkit.errors import EaselError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i, size in enumerate([(64, 64), (64, 64), (96, 64), (64, 96)]):
        write_image(root / f"img{i}.png", size=size, color=(60 * i, 80, 90), caption=f"thing {i}")
    return root


def make(folder: Path, **fields) -> TrainData:
    fields.setdefault("resolution", [64])
    return TrainData([dataset(folder, **fields)], trigger_word="ohwx", batch_size=2, seed=3, bucket_divisibility=16)


def latents_on_disk(folder: Path) -> list[Path]:
    return sorted((folder / "_latent_cache" / "latents").glob("*.safetensors"))


def test_latent_key_changes_with_every_parameter():
    placement = place((96, 64), (80, 48))
    base = latent_key("abc", placement, False, False, "vae")
    others = [latent_key("abd", placement, False, False, "vae"), latent_key("abc", place((96, 64), (64, 48)), False, False, "vae"),
              latent_key("abc", placement, True, False, "vae"), latent_key("abc", placement, False, True, "vae"),
              latent_key("abc", placement, False, False, "vae2"), latent_key("abc", place((97, 64), (80, 48)), False, False, "vae")]
    assert len({base, *others}) == 7
    assert base == latent_key("abc", place((96, 64), (80, 48)), False, False, "vae")
    assert text_key("a", "te") != text_key("a", "te2") != text_key("b", "te")


def test_disk_cache_warm_run_encodes_nothing_and_matches(folder):
    adapter = FakeAdapter()
    first = make(folder, cache_latents_to_disk=True)
    first.prepare(adapter)
    assert adapter.encoded_images == 4
    assert len(latents_on_disk(folder)) == 4
    cold = [batch.latents.clone() for batch, _ in itertools.islice(first.batches(), 3)]
    warm_adapter = FakeAdapter()
    second = make(folder, cache_latents_to_disk=True)
    second.prepare(warm_adapter)
    assert warm_adapter.encoded_images == 0
    warm = [batch for batch, _ in itertools.islice(second.batches(), 3)]
    for old, new in zip(cold, warm):
        assert torch.equal(old, new.latents) and new.pixels is None


def test_encoding_is_batched_by_bucket_with_a_progress_bar(folder, monkeypatch):
    from toolkit.data import cache

    bars = []

    class Bar:
        def __init__(self, total, desc, unit):
            self.total, self.desc, self.done = total, desc, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, count):
            self.done += count

    monkeypatch.setattr(cache, "_progress", Bar)
    for i in range(4, 7):
        write_image(folder / f"img{i}.png", size=(64, 64), color=(30 * i, 10, 10), caption=f"thing {i}")
    adapter = FakeAdapter()
    make(folder, cache_latents=True).prepare(adapter, cache_text=True)
    assert sorted(adapter.image_batches) == [1, 1, 1, 2, 2]  # five 64x64 images in batches of 2, two other buckets
    assert [(bar.desc, bar.total, bar.done) for bar in bars] == [("caching latents", 7, 7),
                                                                 ("caching text embeddings", 7, 7)]


def test_cached_latent_is_the_encoded_batch_pixels(folder):
    cached = make(folder, cache_latents=True)
    cached.prepare(FakeAdapter())
    plain = make(folder)
    for (batch, _), (reference, _) in itertools.islice(zip(cached.batches(), plain.batches()), 4):
        assert batch.paths == reference.paths
        assert torch.allclose(batch.latents, torch.nn.functional.avg_pool2d(reference.pixels, 8))


def test_edited_image_is_encoded_again(folder):
    make(folder, cache_latents_to_disk=True).prepare(FakeAdapter())
    write_image(folder / "img1.png", size=(64, 64), color=(1, 2, 3))
    adapter = FakeAdapter()
    data = make(folder, cache_latents_to_disk=True)
    data.prepare(adapter)
    assert adapter.encoded_images == 1
    assert len(latents_on_disk(folder)) == 5
    edited = [batch for batch, _ in itertools.islice(data.batches(), data.steps_per_epoch())
              if folder / "img1.png" in batch.paths]
    assert edited


def test_other_vae_or_resolution_is_encoded_again(folder):
    make(folder, cache_latents_to_disk=True).prepare(FakeAdapter())
    other_vae = FakeAdapter(vae="vae-2")
    make(folder, cache_latents_to_disk=True).prepare(other_vae)
    assert other_vae.encoded_images == 4
    bigger = FakeAdapter()
    make(folder, cache_latents_to_disk=True, resolution=[64, 96]).prepare(bigger)
    assert bigger.encoded_images == 2


def test_memory_cache_is_warm_on_second_prepare_and_writes_no_files(folder):
    adapter = FakeAdapter()
    data = make(folder, cache_latents=True)
    data.prepare(adapter)
    data.prepare(adapter)
    assert adapter.encoded_images == 4
    assert not (folder / "_latent_cache").exists()


def test_flips_cache_both_orientations(folder):
    adapter = FakeAdapter()
    data = make(folder, cache_latents_to_disk=True, flip_x=True)
    data.prepare(adapter)
    assert adapter.encoded_images == 8
    plain = make(folder, flip_x=True)
    unflipped = make(folder)
    flipped = 0
    for (batch, _), (reference, _), (straight, _) in itertools.islice(zip(data.batches(), plain.batches(), unflipped.batches()), 12):
        assert torch.allclose(batch.latents, torch.nn.functional.avg_pool2d(reference.pixels, 8))
        flipped += not torch.equal(reference.pixels, straight.pixels)
    assert flipped > 0
    again = FakeAdapter()
    make(folder, cache_latents_to_disk=True, flip_x=True).prepare(again)
    assert again.encoded_images == 0


def test_cache_dir_setting(folder, tmp_path):
    target = tmp_path / "elsewhere"
    make(folder, cache_latents_to_disk=True, cache_dir=str(target)).prepare(FakeAdapter())
    assert len(list((target / "latents").glob("*.safetensors"))) == 4
    assert not (folder / "_latent_cache").exists()


def test_damaged_cache_file_is_encoded_again(folder):
    make(folder, cache_latents_to_disk=True).prepare(FakeAdapter())
    latents_on_disk(folder)[0].write_bytes(b"garbage")
    adapter = FakeAdapter()
    make(folder, cache_latents_to_disk=True).prepare(adapter)
    assert adapter.encoded_images == 1


def test_batches_need_prepare_when_caching(folder):
    with pytest.raises(RuntimeError, match="prepare"):
        next(make(folder, cache_latents=True).batches())


def _corrupt_png_data(path: Path) -> None:
    """Zero part of the compressed pixels but keep the chunk checksum right: the scan's check passes."""
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    length = int.from_bytes(data[at - 4:at], "big")
    data[at + 6:at + 26] = bytes(20)
    data[at + 4 + length:at + 8 + length] = zlib.crc32(bytes(data[at:at + 4 + length])).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def test_image_failing_full_decode_is_dropped_at_prepare(folder):
    _corrupt_png_data(folder / "img3.png")
    adapter = FakeAdapter()
    loader = make(folder, cache_latents=True)
    assert len(loader.entries) == 4
    loader.prepare(adapter)
    assert len(loader.entries) == 3
    assert adapter.encoded_images == 3
    assert loader.scans[0].skipped == {"unreadable": ["img3.png"]}
    assert loader.steps_per_epoch() == 2


def test_image_failing_full_decode_without_cache_is_a_clear_error(folder):
    _corrupt_png_data(folder / "img3.png")
    loader = make(folder)
    with pytest.raises(EaselError, match="img3.png: unreadable when loaded for training"):
        list(itertools.islice(loader.batches(), loader.steps_per_epoch()))


def test_text_cache_warm_and_keyed_by_caption_and_encoder(folder):
    adapter = FakeAdapter()
    data = make(folder, caption_dropout_rate=0.5)
    data.prepare(adapter, cache_text=True, unload_text_encoder=True)
    assert sorted(adapter.encoded_prompts) == sorted(["", *(f"ohwx thing {i}" for i in range(4))])
    assert adapter.moves == [(["text_encoder"], "cpu")]
    empty = 0
    for batch, _ in itertools.islice(data.batches(), 12):
        assert batch.cond["prompt_embeds"].shape == (len(batch.captions), 3, 4)
        direct = adapter.encode_prompts(batch.captions)
        assert torch.equal(batch.cond["prompt_embeds"], direct["prompt_embeds"])
        assert torch.equal(batch.cond["pooled"], direct["pooled"])
        empty += batch.captions.count("")
    assert empty > 0
    warm = FakeAdapter()
    make(folder, caption_dropout_rate=0.5).prepare(warm, cache_text=True)
    assert warm.encoded_prompts == []
    (folder / "img0.txt").write_text("new words")
    other = FakeAdapter(text="te-2")
    make(folder, caption_dropout_rate=0.5).prepare(other, cache_text=True)
    assert len(other.encoded_prompts) == 5
    changed = FakeAdapter()
    make(folder, caption_dropout_rate=0.5).prepare(changed, cache_text=True)
    assert changed.encoded_prompts == ["ohwx new words"]


def test_text_cache_refuses_random_token_rules(folder):
    with pytest.raises(EaselError, match="shuffle_tokens or token_dropout_rate"):
        make(folder, shuffle_tokens=True).prepare(FakeAdapter(), cache_text=True)


@pytest.mark.parametrize("rank_one_starts_late", [False, True])
def test_two_ranks_share_disk_caching(folder, rank_one_starts_late):
    """Each rank encodes half; also when rank 1 looks at the cache only after rank 0 has filled its half."""
    adapters = [FakeAdapter(), FakeAdapter()]
    loaders = [TrainData([dataset(folder, cache_latents_to_disk=True, resolution=[64])], trigger_word=None,
                         batch_size=1, seed=0, bucket_divisibility=16, rank=rank, world_size=2) for rank in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    threads = [threading.Thread(target=loader.prepare, args=(adapter,), kwargs={"barrier": barrier.wait})
               for loader, adapter in zip(loaders, adapters)]
    threads[0].start()
    while rank_one_starts_late and barrier.n_waiting < 1:
        threads[0].join(0.01)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert adapters[0].encoded_images == 2 and adapters[1].encoded_images == 2
    assert len(latents_on_disk(folder)) == 4


def test_two_ranks_share_text_caching(folder):
    adapters = [FakeAdapter(), FakeAdapter()]
    loaders = [TrainData([dataset(folder, resolution=[64])], trigger_word=None, batch_size=1, seed=0,
                         bucket_divisibility=16, rank=rank, world_size=2) for rank in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    threads = [threading.Thread(target=loader.prepare, args=(adapter,), kwargs={"barrier": barrier.wait, "cache_text": True})
               for loader, adapter in zip(loaders, adapters)]
    threads[0].start()
    while barrier.n_waiting < 1:
        threads[0].join(0.01)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert sorted(adapters[0].encoded_prompts + adapters[1].encoded_prompts) == [f"thing {i}" for i in range(4)]
    assert len(adapters[0].encoded_prompts) == len(adapters[1].encoded_prompts) == 2


def test_unwritable_cache_folder_is_a_user_error(folder, tmp_path):
    blocker = tmp_path / "file_not_folder"
    blocker.write_text("x")
    with pytest.raises(EaselError, match="cannot write the cache in .*cache_dir"):
        make(folder, cache_latents_to_disk=True, cache_dir=str(blocker)).prepare(FakeAdapter())
