"""The training data the trainer iterates: ``TrainData`` and its batches.

Order and randomness. Each image gets one entry per resolution and repeat (its "item index" is
its place in that list). The order of epoch ``e`` and every random choice for an entry (caption
rules, flips, random crop) come from generators seeded by ``(seed, e, purpose, item index)``, so
``batches(LoaderPosition(e, i))`` continues exactly like an uninterrupted run.

Batches. Entries are grouped by bucket (and by whether their latents are cached, so a batch is
all latents or all pixels) and by the dataset's batch size. Each group is shuffled and cut into global batches of
``batch_size * world_size`` entries (a dataset's own ``batch_size`` where it sets one); the global batches of all
groups are then shuffled together. A group's last batch may be smaller. Rank ``r`` takes the ``r``-th contiguous
share of every global batch, so ranks never see the same entry in a step; with several ranks a short last batch
is padded with other entries of its bucket (from the start of the bucket's order) until it
divides evenly, so every rank gets the same number of rows.

Caches. Latents (``cache_latents`` / ``cache_latents_to_disk``) and text rows
(``prepare(cache_text=True)``) are filled by ``prepare``; see ``toolkit.data.cache``. Text caching
needs captions that can only be themselves or empty: ``shuffle_tokens`` and
``token_dropout_rate`` are refused with it (see ``LoraTrainerConfig.check``).

Edit pairs. An image's references (``control_path``) are fitted as the architecture's ``ReferenceImages``
says (to the target's bucket, or at their own aspect), flipped with the target, and cached with the same
keys as targets (the latent cache holds both); entries whose references have different sizes never share
a batch. Where the text encoder reads the references, cached text rows are keyed by them too.
"""

from __future__ import annotations

import functools
import os
from collections import Counter, defaultdict
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from toolkit.config.blocks import DatasetConfig
from toolkit.data.buckets import Placement, Size, choose_bucket, place, square_bucket
from toolkit.data.cache import (LatentJob, TensorCache, TextJob, encode_latents, encode_texts, file_digest, latent_key,
                                stack_rows, text_key)
from toolkit.data.captions import CaptionRules
from toolkit.data.entries import Draw, Entry, LoaderPosition, TrainBatch, reference_placements, rng_for
from toolkit.data.images import BadImage
from toolkit.data.masks import MaskRule, render_mask
from toolkit.data.scan import DatasetScan, ImageRecord, cache_root, dataset_location, scan_dataset
from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.output import can_write, clean_stale_temps

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.models.base import ModelAdapter
    from toolkit.registry import ReferenceImages


STALE_TEMP_SECONDS = 3600
"""A cache's temp file this old is left by a killed run (a live one writes a cache entry in well under a second)."""
TEXT_MEMORY_BUDGET = 2 ** 30
"""Bytes of cached text rows per dataset kept in memory once read (the rest is read from disk each time)."""


class EmptyDataset(EaselError):
    """A dataset left without usable images; ``index`` lets a process point at its ``folder_path`` line."""

    def __init__(self, index: int, scan: DatasetScan, caption_ext: str):
        self.index = index
        if scan.skipped:
            why = f". Dropped: {scan.skipped_summary()}."
            self.hint = "Fix or replace those files, or add usable images."
        else:
            why = ": no .jpg/.jpeg/.png/.webp/.bmp files found (hidden and cache folders are not read)."
            self.hint = f"Put images in it, captioned by same-stem .{caption_ext} files or a metadata.jsonl."
        self.problem = f"dataset '{scan.folder}' has no usable images{why}"  # where a YAML path is shown beside it
        super().__init__(f"dataset '{scan.folder}' (datasets[{index}].folder_path) has no usable images{why} {self.hint}")


def mask_rule(index: int, config: DatasetConfig) -> MaskRule:
    """Where dataset ``index``'s loss masks come from; its ``mask_path`` must be a folder."""
    folder = Path(config.mask_path).expanduser() if config.mask_path else None
    if folder is not None and not folder.is_dir():
        raise EaselError(f"datasets[{index}].mask_path '{config.mask_path}' is not a folder; point it at the folder of "
                         "masks named like the images (or remove it).")
    return MaskRule(folder=folder, alpha=config.alpha_mask, invert=config.invert_mask, min_value=config.mask_min_value)


def _on_disk(caches: "list[TensorCache | None]") -> str:
    """`` (on disk in A, B)`` for the caches that have a folder; empty when none does."""
    folders = list(dict.fromkeys(str(cache.folder) for cache in caches if cache is not None and cache.folder is not None))
    return f" (on disk in {', '.join(folders)})" if folders else ""


def _flips(enabled: bool) -> tuple[bool, ...]:
    return (False, True) if enabled else (False,)


class TrainData:
    """All datasets of a training process: scanned at construction, cached by ``prepare``, iterated by ``batches``."""

    def __init__(self, datasets: list[DatasetConfig], *, trigger_word: str | None, batch_size: int, seed: int,
                 bucket_divisibility: int, rank: int = 0, world_size: int = 1, workers: int | None = None,
                 references: "ReferenceImages | None" = None, fallback_cache: Path | None = None,
                 reg_weight: float = 1.0):
        """``references``: how the architecture takes reference images (its ArchSpec's); None refuses edit pairs.
        ``fallback_cache``: where disk caches go when a dataset folder cannot be written (see ``cache_root``).
        ``reg_weight``: the loss weight of regularization datasets (``train.reg_weight``)."""
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or bucket_divisibility < 1:
            raise ValueError(f"bad loader settings: batch_size={batch_size}, rank={rank}, world_size={world_size}, "
                             f"bucket_divisibility={bucket_divisibility}")
        self.datasets = list(datasets)
        self.batch_size, self.seed, self.divisibility = batch_size, seed, bucket_divisibility
        self.rank, self.world_size = rank, world_size
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.reference_spec = references
        self.rules = [CaptionRules.from_config(config, trigger_word) for config in self.datasets]
        self.masks = [mask_rule(index, config) for index, config in enumerate(self.datasets)]
        self.loss_weights = [config.loss_multiplier * (reg_weight if config.is_reg else 1.0) for config in self.datasets]
        self.scans: list[DatasetScan] = [scan_dataset(config) for config in self.datasets]
        self.fallback_cache = fallback_cache
        self._roots: dict[int, Path] = {}
        self.latent_caches = [self._latent_cache(index) for index in range(len(self.datasets))]
        self._digests: dict[Path, str] = {}
        self._vae_identity: str | None = None
        self._text_identity: str | None = None
        self._plans: dict[int, list[list[int]]] = {}
        self._prepared = False
        for index, scan in enumerate(self.scans):
            self._drop_small(index, scan)
        self._build()

    def cache_root(self, index: int) -> Path:
        """Where dataset ``index`` keeps its disk caches, decided once: ``cache_dir``, else ``<folder_path>/_latent_cache``;
        when that cannot be written and a ``fallback_cache`` (the run folder's) is given, that one, said in one log line."""
        if index not in self._roots:
            config = self.datasets[index]
            root = cache_root(config)
            if not config.cache_dir and self.fallback_cache is not None and not can_write(root):
                if self.rank == 0:
                    log.info(f"dataset '{config.folder_path}' is not writable: its disk cache goes to {self.fallback_cache} "
                             f"instead of {root} (datasets[].cache_dir chooses another place)")
                root = self.fallback_cache
            self._roots[index] = root
        return self._roots[index]

    @functools.cached_property
    def text_caches(self) -> list[TensorCache]:
        """The text-embedding cache of each dataset (made on first use: only ``prepare(cache_text=True)`` needs them)."""
        return [TensorCache(self.cache_root(index) / "text", memory=False, memory_budget=TEXT_MEMORY_BUDGET)
                for index in range(len(self.datasets))]

    def _latent_cache(self, index: int) -> TensorCache | None:
        config = self.datasets[index]
        if config.cache_latents_to_disk:
            return TensorCache(self.cache_root(index) / "latents", memory=config.cache_latents)
        return TensorCache(None, memory=True) if config.cache_latents else None

    def _bucket(self, index: int, record: ImageRecord, resolution: int) -> Size | None:
        """The record's bucket at ``resolution``: its aspect bucket (within the dataset's aspect limit) of the size
        ``scale`` makes it, or the square with ``square_crop`` / ``buckets: false``; None when it is too small."""
        config = self.datasets[index]
        if config.square_crop or not config.buckets:
            return square_bucket(resolution, self.divisibility)
        width, height = int(record.width * config.scale), int(record.height * config.scale)
        return choose_bucket(width, height, resolution, self.divisibility, max_aspect=config.max_aspect_ratio)

    def _drop_small(self, index: int, scan: DatasetScan) -> None:
        """Skip the images no bucket fits (too thin); note those cropped to the aspect limit."""
        keep = []
        limit = self.datasets[index].max_aspect_ratio
        for record in scan.records:
            if not any(self._bucket(index, record, r) for r in self.datasets[index].resolution):
                scan.skip(record.path, f"smaller than {self.divisibility}px on a side")
                continue
            keep.append(record)
            if max(record.width / record.height, record.height / record.width) > limit:
                scan.note(record.path, f"cropped to the maximum aspect ratio {limit:g}:1", f"({record.width}x{record.height})")
        scan.records = keep

    def _build(self) -> None:
        """Entries and groups from the current records; a dataset left empty is an error."""
        for index, scan in enumerate(self.scans):
            if not scan.records:
                raise EmptyDataset(index, scan, self.datasets[index].caption_ext)
        self.entries: list[Entry] = []
        for index, (config, scan) in enumerate(zip(self.datasets, self.scans)):
            cached = self.latent_caches[index] is not None
            for number, record in enumerate(scan.records):
                for resolution in config.resolution:
                    bucket = self._bucket(index, record, resolution)
                    if bucket is None:
                        continue
                    placement = place((record.width, record.height), bucket)
                    refs = reference_placements(record, bucket, self.reference_spec)
                    self.entries.extend(Entry(index, number, resolution, repeat, placement, cached, refs)
                                        for repeat in range(config.num_repeats))
        groups: dict[tuple, list[int]] = defaultdict(list)
        self.group_batch: dict[tuple, int] = {}
        for item, entry in enumerate(self.entries):
            key = self._group_key(entry)
            groups[key].append(item)
            self.group_batch[key] = self.dataset_batch(entry.dataset)
        self.groups = dict(sorted(groups.items()))
        self._plans.clear()

    def dataset_batch(self, index: int) -> int:
        """Entries per rank and step from dataset ``index``: its own ``batch_size``, else the process's."""
        return self.datasets[index].batch_size or self.batch_size

    def _group_key(self, entry: Entry) -> tuple:
        """Entries with one key may share a batch: same group, adapter weight and batch size. A key stays the bare
        group where both are the defaults (keys seed the shuffles, so existing runs keep their order)."""
        weight, size = self.datasets[entry.dataset].network_weight, self.dataset_batch(entry.dataset)
        if size != self.batch_size:
            return (*entry.group, float(weight), float(size))
        return entry.group if weight == 1.0 else (*entry.group, weight)

    def global_batch(self, key: tuple) -> int:
        """Entries per global batch of group ``key``: its batch size times ``world_size``."""
        return self.group_batch[key] * self.world_size

    def steps_per_epoch(self) -> int:
        """Global batches per epoch (final once ``prepare`` has run, which may drop undecodable images)."""
        return sum(-(-len(items) // self.global_batch(key)) for key, items in self.groups.items())

    def _pad(self, chunk: list[int], order: list[int]) -> list[int]:
        """Pad a short global batch with other entries of its bucket until every rank gets the same count."""
        missing = -len(chunk) % self.world_size
        others = [item for item in order if item not in chunk] or chunk
        return chunk + [others[i % len(others)] for i in range(missing)]

    def plan(self, epoch: int) -> list[list[int]]:
        """The global batches (entry indices) of ``epoch``, the same on every rank."""
        if epoch not in self._plans:
            chunks = []
            for key, items in self.groups.items():
                order = list(items)
                rng_for(self.seed, "bucket", epoch, key).shuffle(order)
                size = self.global_batch(key)
                for start in range(0, len(order), size):
                    chunks.append(self._pad(order[start:start + size], order))
            rng_for(self.seed, "order", epoch).shuffle(chunks)
            self._plans = {epoch: chunks}
        return self._plans[epoch]

    def share(self, chunk: list[int]) -> list[int]:
        """This rank's contiguous share of a global batch."""
        size = len(chunk) // self.world_size
        return chunk[self.rank * size:(self.rank + 1) * size]

    def draw(self, item: int, epoch: int) -> Draw:
        """The random choices for entry ``item`` in ``epoch`` (they depend on nothing else)."""
        entry = self.entries[item]
        config = self.datasets[entry.dataset]
        record = self.scans[entry.dataset].records[entry.record]
        flip_x = config.flip_x and rng_for(self.seed, "flip_x", epoch, item).random() < 0.5
        flip_y = config.flip_y and rng_for(self.seed, "flip_y", epoch, item).random() < 0.5
        placement = entry.placement
        if config.random_crop and not entry.cached:
            placement = place(placement.source, placement.bucket, rng_for(self.seed, "crop", epoch, item))
        caption = self.rules[entry.dataset].apply(record.caption, rng_for(self.seed, "caption", epoch, item))
        refs = tuple(placement if (ref.source, ref.bucket) == (placement.source, placement.bucket) else ref
                     for ref in entry.references)
        return Draw(entry, record, placement, flip_x, flip_y, caption, refs)

    def _forget(self, failed: dict[Path, BadImage]) -> None:
        """Drop images that failed to decode during caching (or whose reference did), and rebuild the entries."""
        for scan in self.scans:
            kept = []
            for record in scan.records:
                bad = [(path, failed[path]) for path in (record.path, *(ref.path for ref in record.references)) if path in failed]
                if not bad:
                    kept.append(record)
                    continue
                path, error = bad[0]
                scan.skip(record.path, error.reason if path == record.path else f"reference image {error.reason}")
            scan.records = kept
        self._build()

    def _run_shared(self, wanted: list, encode: Callable[[list], None], missing: Callable[[object], bool],
                    on_disk: Callable[[object], bool], barrier: Callable[[], None] | None) -> int:
        """Encode the ``wanted`` jobs that are ``missing``; return how many were missing at the start.

        With several ranks and a barrier, disk jobs are first split between ranks by their place in
        ``wanted`` (every job, cached or not, so all ranks split the same list however far the others
        have got), each rank encodes the missing ones of its share, and after the barrier whatever is
        still missing (memory caches, a rank's failures) is encoded by each rank itself.
        """
        todo = [job for job in wanted if missing(job)]
        count = len(todo)
        if self.world_size > 1 and barrier is not None:
            shared = [job for job in wanted if on_disk(job)]
            encode([job for job in shared[self.rank::self.world_size] if missing(job)])
            barrier()
            todo = [job for job in todo if missing(job)]
        encode(todo)
        return count

    def _latent_jobs(self) -> list[LatentJob]:
        """Every image variant the latent caches must hold (stored or not), in entry order."""
        jobs: dict[str, LatentJob] = {}
        failed: dict[Path, BadImage] = {}
        assert self._vae_identity is not None
        for entry in self.entries:
            cache = self.latent_caches[entry.dataset]
            if cache is None:
                continue
            record = self.scans[entry.dataset].records[entry.record]
            try:
                for path in (record.path, *(ref.path for ref in record.references)):
                    self._digest(path)
            except OSError as err:
                failed[record.path] = BadImage(record.path, "unreadable", str(err))
                continue
            config = self.datasets[entry.dataset]
            images = [(record.path, entry.placement), *((ref.path, placed) for ref, placed in zip(record.references, entry.references))]
            for flip_x in _flips(config.flip_x):
                for flip_y in _flips(config.flip_y):
                    for path, placement in images:
                        key = latent_key(self._digest(path), placement, flip_x, flip_y, self._vae_identity)
                        jobs.setdefault(key, LatentJob(key, path, placement, flip_x, flip_y, cache))
        if failed:
            self._forget(failed)
            return self._latent_jobs()
        return list(jobs.values())

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def _prepare_latents(self, adapter: "ModelAdapter", barrier: Callable[[], None] | None) -> None:
        if all(cache is None for cache in self.latent_caches):
            return
        self._vae_identity = adapter.identity("vae")
        jobs = self._latent_jobs()
        failed: dict[Path, BadImage] = {}

        def encode(batch: list) -> None:
            failed.update(encode_latents(batch, adapter, self.batch_size))

        missing = self._run_shared(jobs, encode, lambda job: not job.cache.has(job.key),
                                   lambda job: job.cache.folder is not None, barrier)
        log.info(f"latent cache: {missing} of {len(jobs)} image variants encoded{_on_disk(self.latent_caches)}")
        if failed:
            self._forget(failed)

    @property
    def text_sees_references(self) -> bool:
        """Whether the architecture's text encoder reads the reference images (text rows are then keyed by them)."""
        return self.reference_spec is not None and self.reference_spec.text_encoder_sees

    def _seen(self, record: ImageRecord, placements: tuple[Placement, ...], flip_x: bool, flip_y: bool) -> tuple:
        """What a reading text encoder sees of ``record``'s references: (path, placement, flip_x, flip_y) per slot."""
        if not self.text_sees_references:
            return ()
        return tuple((ref.path, placement, flip_x, flip_y) for ref, placement in zip(record.references, placements))

    def _text_cache_key(self, caption: str, seen: tuple) -> str:
        assert self._text_identity is not None
        identity = self._text_identity + "".join(f"|{latent_key(self._digest(path), placement, fx, fy, 'reference')}"
                                                 for path, placement, fx, fy in seen)
        return text_key(caption, identity)

    def _text_jobs(self) -> list[TextJob]:
        todo: dict[tuple[Path | None, str], TextJob] = {}
        for entry in self.entries:
            rules, cache, config = self.rules[entry.dataset], self.text_caches[entry.dataset], self.datasets[entry.dataset]
            record = self.scans[entry.dataset].records[entry.record]
            texts = rules.possible(record.caption)
            if texts is None or (config.random_crop and self._seen(record, entry.references, False, False)):
                why = ("shuffle_tokens or token_dropout_rate (every step would need a new caption)" if texts is None else
                       "random_crop with an encoder that reads the reference images (every step would see a new crop)")
                raise EaselError(f"dataset '{config.folder_path}': cached text embeddings cannot follow {why}; turn those "
                                 "off or set train.cache_text_embeddings: false")
            variants = {self._seen(record, entry.references, fx, fy) for fx in _flips(config.flip_x) for fy in _flips(config.flip_y)}
            for text in sorted(texts):
                for seen in sorted(variants, key=repr):
                    key = self._text_cache_key(text, seen)
                    todo.setdefault((cache.folder, key), TextJob(text, cache, key, seen))
        return list(todo.values())

    def _prepare_text(self, adapter: "ModelAdapter", barrier: Callable[[], None] | None) -> None:
        self._text_identity = adapter.identity("text_encoder")
        wanted = self._text_jobs()
        missing = self._run_shared(wanted, lambda batch: encode_texts(batch, adapter, self.batch_size),
                                   lambda job: not job.cache.has(job.key), lambda job: True, barrier)
        log.info(f"text cache: {missing} of {len(wanted)} captions encoded{_on_disk(self.text_caches)}")

    def prepare(self, adapter: "ModelAdapter", *, cache_text: bool = False, unload_text_encoder: bool = False,
                barrier: Callable[[], None] | None = None) -> None:
        """Fill the latent caches the datasets ask for and, with ``cache_text``, the text cache.

        Args:
            adapter: the loaded model (its VAE and text encoders are used, on their current device).
            cache_text: encode every caption the rules can produce; batches then carry ``cond``.
            unload_text_encoder: afterwards move the text encoders to the CPU (needs ``cache_text``).
            barrier: with several ranks, a function that waits for all of them (e.g.
                ``accelerator.wait_for_everyone``); disk caches are then filled by the ranks together.
        """
        if unload_text_encoder and not cache_text:
            raise ValueError("unload_text_encoder needs cache_text")
        for cache in [*self.latent_caches, *self.text_caches]:
            if cache is not None and cache.folder is not None:  # caches may be shared: only old temp files are stale
                clean_stale_temps(cache.folder, older_than=STALE_TEMP_SECONDS)
        self._prepare_latents(adapter, barrier)
        if cache_text:
            self._prepare_text(adapter, barrier)
        if unload_text_encoder:
            adapter.move(list(adapter.text_encoders), "cpu")
        self._prepared = True

    def _schedule(self, start: LoaderPosition) -> Iterator[tuple[int, list[int], LoaderPosition]]:
        """(epoch, this rank's entries, position after) for every batch from ``start`` on, endlessly."""
        epoch, index = start.epoch, start.index
        while True:
            chunks = self.plan(epoch)
            for number in range(index, len(chunks)):
                after = LoaderPosition(epoch, number + 1) if number + 1 < len(chunks) else LoaderPosition(epoch + 1, 0)
                yield epoch, self.share(chunks[number]), after
            epoch, index = epoch + 1, 0

    def _render(self, draw: Draw, slot: int | None = None) -> "Image.Image":
        """The draw's image fitted to its bucket, or (``slot``) its reference image of that slot."""
        from toolkit.data.render import render

        path, placement = self._image(draw, slot)
        try:
            return render(path, placement, draw.flip_x, draw.flip_y)
        except BadImage as err:
            raise EaselError(f"{path}: {err.reason} when loaded for training, although the scan accepted it "
                             "(changed since, or damaged inside its compressed data). Remove or fix it and run again.") from None

    @staticmethod
    def _image(draw: Draw, slot: int | None) -> tuple[Path, Placement]:
        if slot is None:
            return draw.record.path, draw.placement
        return draw.record.references[slot].path, draw.references[slot]

    def _latent(self, draw: Draw, slot: int | None = None) -> "torch.Tensor":
        cache = self.latent_caches[draw.entry.dataset]
        assert cache is not None and self._vae_identity is not None
        path, placement = self._image(draw, slot)
        key = latent_key(self._digest(path), placement, draw.flip_x, draw.flip_y, self._vae_identity)
        try:
            return cache.get(key)["latent"]
        except KeyError:
            raise EaselError(f"the cached latent of {path} is missing or damaged (cache {cache.folder}); "
                             "run again to re-encode it.") from None

    def _text_row(self, draw: Draw) -> "dict[str, torch.Tensor]":
        cache = self.text_caches[draw.entry.dataset]
        try:
            return cache.get(self._text_cache_key(draw.caption, self._seen(draw.record, draw.references, draw.flip_x, draw.flip_y)))
        except KeyError:
            raise EaselError(f"the cached text embedding of caption {draw.caption!r} is missing or damaged "
                             f"(cache {cache.folder}); run again to re-encode it.") from None

    def _rendered(self, draws: list[Draw], slot: int | None, pool: Executor | None) -> "torch.Tensor":
        from toolkit.data.render import to_pixels

        render = functools.partial(self._render, slot=slot)
        return to_pixels(list(pool.map(render, draws)) if pool is not None else [render(draw) for draw in draws])

    def make_batch(self, items: list[int], epoch: int, pool: Executor | None = None) -> TrainBatch:
        """The batch of entries ``items`` in ``epoch`` (images rendered on ``pool`` when given)."""
        import torch

        draws = [self.draw(item, epoch) for item in items]
        cached, slots = draws[0].entry.cached, range(len(draws[0].entry.references))
        pixels = latents = ref_latents = ref_pixels = None
        if cached:
            latents = torch.stack([self._latent(draw) for draw in draws])
            ref_latents = [torch.stack([self._latent(draw, slot) for draw in draws]) for slot in slots] or None
        else:
            pixels = self._rendered(draws, None, pool)
        if not cached or (self.text_sees_references and self._text_identity is None):
            ref_pixels = [self._rendered(draws, slot, pool) for slot in slots] or None
        cond = stack_rows([self._text_row(draw) for draw in draws]) if self._text_identity is not None else None
        masks = None
        if any(self.masks[draw.entry.dataset].active for draw in draws):
            masks = torch.stack(list(pool.map(self._mask, draws)) if pool is not None else [self._mask(d) for d in draws])
        weights = [self.loss_weights[draw.entry.dataset] for draw in draws]
        return TrainBatch(pixels=pixels, latents=latents, captions=[draw.caption for draw in draws], cond=cond,
                          image_info=[draw.placement.image_info(draw.flip_x, draw.flip_y) for draw in draws],
                          paths=[draw.record.path for draw in draws], reference_latents=ref_latents, reference_pixels=ref_pixels,
                          masks=masks, loss_weights=torch.tensor(weights) if any(w != 1.0 for w in weights) else None,
                          network_weight=self.datasets[draws[0].entry.dataset].network_weight)

    def _mask(self, draw: Draw) -> "torch.Tensor":
        try:
            return render_mask(self.masks[draw.entry.dataset], draw.record.path, draw.placement, draw.flip_x, draw.flip_y)
        except BadImage as err:
            raise EaselError(f"the loss mask of {draw.record.path} ({err.path}): {err.reason}. Fix or remove it.") from None

    def position(self, saved: Mapping[str, int] | None = None) -> LoaderPosition:
        """The position to start from: the first batch, or the one a training state saved."""
        return LoaderPosition(**(saved or {}))

    def batches(self, start: LoaderPosition | None = None) -> Iterator[tuple[TrainBatch, LoaderPosition]]:
        """This rank's batches from ``start`` on, endlessly over epochs, each with the position after it.

        The next batch is assembled in a background thread while the caller trains on the current one.
        """
        if any(cache is not None for cache in self.latent_caches) and not self._prepared:
            raise RuntimeError("these datasets cache latents: call prepare(adapter) before batches()")
        schedule = self._schedule(start or LoaderPosition())
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-batch")
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="easel-image")
        try:
            epoch, items, after = next(schedule)
            pending = ahead.submit(self.make_batch, items, epoch, pool), after
            for epoch, items, after in schedule:
                upcoming = ahead.submit(self.make_batch, items, epoch, pool), after
                yield pending[0].result(), pending[1]
                pending = upcoming
        finally:
            ahead.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)

    def _caption_line(self, index: int) -> str:
        config, rules, scan = self.datasets[index], self.rules[index], self.scans[index]
        sources = Counter(record.caption_source for record in scan.records)
        parts = [f"{sources['file']} from .{config.caption_ext} files"]
        if sources["metadata"]:
            parts.append(f"{sources['metadata']} from metadata")
        if sources["default"]:
            parts.append(f"{sources['default']} default ({config.default_caption!r})")
        rules_text = []
        if rules.trigger:
            rules_text.append(f"trigger {rules.trigger!r}" + (" added where missing" if rules.add_trigger else " (reg set: not added)"))
        if rules.dropout_rate:
            rules_text.append(f"caption dropout {rules.dropout_rate:g}")
        if rules.shuffle:
            rules_text.append(f"shuffle (keep {rules.keep_tokens})")
        if rules.token_dropout_rate:
            rules_text.append(f"token dropout {rules.token_dropout_rate:g}")
        flips = [axis for axis, on in (("x", config.flip_x), ("y", config.flip_y)) if on]
        if flips:
            rules_text.append(f"random flips {'/'.join(flips)}")
        return f"captions: {', '.join(parts)}" + (f"; {'; '.join(rules_text)}" if rules_text else "")

    def _bucket_line(self, index: int, shown: int = 10) -> str:
        counts = Counter((entry.resolution, entry.placement.bucket) for entry in self.entries
                         if entry.dataset == index and entry.repeat == 0)
        lines = []
        for resolution in self.datasets[index].resolution:
            here = sorted(((n, size) for (r, size), n in counts.items() if r == resolution), key=lambda x: (-x[0], x[1]))
            text = ", ".join(f"{w}x{h} x{n}" for n, (w, h) in here[:shown])
            more = f", +{len(here) - shown} more" if len(here) > shown else ""
            lines.append(f"@{resolution}: {text}{more}")
        return "buckets " + "; ".join(lines)

    def _cache_line(self, index: int) -> str:
        config = self.datasets[index]
        if config.cache_latents_to_disk:
            return f"latents: cached on disk in {self.cache_root(index) / 'latents'}" + (" (and in memory)" if config.cache_latents else "")
        return "latents: cached in memory" if config.cache_latents else "latents: not cached (images decoded every step)"

    def _reference_line(self, index: int) -> str:
        spec = self.reference_spec
        how = "fitted to each target's bucket" if spec is None or spec.size == "target" else "at their own aspect ratio"
        seen = "; the text encoder reads them too" if self.text_sees_references else ""
        return f"references: {len(self.datasets[index].control_path)} per image from {', '.join(self.datasets[index].control_path)}, {how}{seen}"

    def dataset_captions(self) -> dict[str, list[str]]:
        """Raw captions of the images trained on, per dataset folder name (for the saved metadata)."""
        found: dict[str, list[str]] = {}
        for config, scan in zip(self.datasets, self.scans):
            found.setdefault(dataset_location(config.folder_path)[0].name, []).extend(record.caption for record in scan.records)
        return found

    def report(self) -> list[str]:
        """Dry-run lines: per dataset images, captions, skipped files, buckets; then steps per epoch."""
        lines = []
        for index, (config, scan) in enumerate(zip(self.datasets, self.scans)):
            entries = sum(1 for entry in self.entries if entry.dataset == index)
            skipped = sum(len(paths) for paths in scan.skipped.values())
            lines += [f"- {scan.folder}: {len(scan.records)} images",
                      f"    {self._caption_line(index)}",
                      f"    skipped {skipped}" + (f": {scan.skipped_summary()}" if skipped else ""),
                      *([f"    notes: {scan.notes_summary()}"] if scan.notes else []),
                      f"    resolution {', '.join(map(str, config.resolution))} x repeats {config.num_repeats} "
                      f"-> {entries} items per epoch",
                      f"    {self._bucket_line(index)}",
                      f"    {self._cache_line(index)}",
                      *([f"    {self._reference_line(index)}"] if config.control_path else [])]
        ranks = f" x {self.world_size} ranks" if self.world_size > 1 else ""
        sizes = sorted({self.dataset_batch(index) for index in range(len(self.datasets))})
        batch = "/".join(map(str, sizes)) + (" by dataset" if len(sizes) > 1 else "")
        lines.append(f"steps per epoch: {self.steps_per_epoch()} (batch {batch}{ranks}, "
                     f"{len(self.groups)} bucket groups, one bucket per batch)")
        return lines
