"""Latent and text-embedding caches.

Latents are keyed by a hash of the image file's bytes, every transform parameter (source size,
bucket, resize, crop, flips) and the VAE's identity, so an edited image (or another VAE) is
encoded again and an unchanged one never is. Text rows are keyed by the caption text and the
text encoder's identity. Disk caches are safetensors files, one per key, written atomically:
``<cache root>/latents/<key>.safetensors`` and ``<cache root>/text/<key>.safetensors``.

With random flips every enabled orientation is encoded up front (a flipped latent is not the
latent of the flipped image, and encoding lazily would keep the VAE busy during training).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from toolkit.data.buckets import Placement
from toolkit.data.images import BadImage
from toolkit.data.render import render, to_pixels
from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.output import atomic_path

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from toolkit.models.base import Conditioning, ModelAdapter

CACHE_VERSION = "1"
"""Part of every key; bump it when the way pixels or rows are made changes."""


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def latent_key(image_digest: str, placement: Placement, flip_x: bool, flip_y: bool, vae_identity: str) -> str:
    """Cache key of one encoded image variant."""
    parts = (CACHE_VERSION, image_digest, placement.source, placement.bucket, placement.resized, placement.crop,
             flip_x, flip_y, vae_identity)
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def text_key(caption: str, encoder_identity: str) -> str:
    """Cache key of one caption's conditioning row."""
    return hashlib.sha256(repr((CACHE_VERSION, caption, encoder_identity)).encode("utf-8")).hexdigest()


class TensorCache:
    """Tensors (or dicts of tensors) by key: in memory, as safetensors files under ``folder``, or both.

    With ``memory_budget`` (bytes) and a folder, entries read from disk are also kept in memory until the
    budget is used up (a training step then reads no file for them).
    """

    def __init__(self, folder: Path | None, memory: bool, memory_budget: int = 0):
        self.folder = folder
        self.memory: dict[str, dict[str, "torch.Tensor"]] | None = {} if memory or folder is None else None
        self.budget = memory_budget
        self.kept: dict[str, dict[str, "torch.Tensor"]] = {}

    def _file(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        """Whether ``key`` is stored (a damaged file counts as missing)."""
        if self.memory is not None and key in self.memory:
            return True
        if self.folder is None:
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(self._file(key)), framework="pt"):
                return True
        except Exception:  # noqa: BLE001 - missing or unreadable file: re-encode it
            return False

    def get(self, key: str) -> dict[str, "torch.Tensor"]:
        """The stored tensors of ``key``; KeyError when absent."""
        if self.memory is not None and key in self.memory:
            return self.memory[key]
        if key in self.kept:
            return self.kept[key]
        if self.folder is None:
            raise KeyError(key)
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self._file(key)))
        except Exception as err:  # noqa: BLE001 - missing or damaged file
            raise KeyError(key) from err
        if self.memory is not None:
            self.memory[key] = tensors
        elif self.budget > 0:
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            if size <= self.budget:
                self.kept[key] = tensors
                self.budget -= size
        return tensors

    def put(self, key: str, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> None:
        """Store ``tensors`` (moved to the CPU) under ``key``."""
        tensors = {name: value.detach().to("cpu").contiguous().clone() for name, value in tensors.items()}
        if self.memory is not None:
            self.memory[key] = tensors
        if self.folder is not None:
            from safetensors.torch import save_file

            try:
                with atomic_path(self._file(key)) as temp:
                    save_file(tensors, str(temp), metadata=metadata)
            except OSError as err:
                raise EaselError(f"cannot write the cache in {self.folder}: {err}. Set datasets[].cache_dir to a "
                                 "writable folder.") from None


@dataclass(frozen=True)
class LatentJob:
    """One image variant to encode."""

    key: str
    path: Path
    placement: Placement
    flip_x: bool
    flip_y: bool
    cache: TensorCache


@dataclass(frozen=True)
class TextJob:
    """One caption row to encode."""

    caption: str
    cache: TensorCache
    key: str
    references: tuple[tuple[Path, Placement, bool, bool], ...] = ()
    """For a text encoder that reads the references: (path, placement, flip_x, flip_y) of each, in slot order."""


def _progress(total: int, desc: str, unit: str):  # noqa: ANN202 - tqdm type
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False)


def _batches(jobs: list[LatentJob], batch_size: int) -> Iterable[list[LatentJob]]:
    """Same-bucket chunks, each image's variants next to each other."""
    groups: dict[tuple[int, int], list[LatentJob]] = defaultdict(list)
    for job in jobs:
        groups[job.placement.bucket].append(job)
    for bucket in sorted(groups):
        group = sorted(groups[bucket], key=lambda job: (str(job.path), job.key))
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


def _try_render(job: LatentJob) -> "Image.Image | BadImage":
    try:
        return render(job.path, job.placement, job.flip_x, job.flip_y)
    except BadImage as err:
        return err


def encode_latents(jobs: list[LatentJob], adapter: "ModelAdapter", batch_size: int,
                   workers: int | None = None) -> dict[Path, BadImage]:
    """Encode every job (batched, with a progress bar) into its cache; return the images that failed to decode.

    Images are decoded on ``workers`` threads, the next batch while the current one is encoded.
    """
    import torch

    failed: dict[Path, BadImage] = {}
    chunks = list(_batches(jobs, batch_size))
    if not chunks:
        return failed
    vae_identity = adapter.identity("vae")
    with (_progress(len(jobs), "caching latents", "img") as bar, torch.no_grad(),
          ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool):
        pending = [pool.submit(_try_render, job) for job in chunks[0]]
        for number, chunk in enumerate(chunks):
            results = [future.result() for future in pending]
            pending = [pool.submit(_try_render, job) for job in chunks[number + 1]] if number + 1 < len(chunks) else []
            usable = [(job, image) for job, image in zip(chunk, results) if not isinstance(image, BadImage)]
            for job, image in zip(chunk, results):
                if isinstance(image, BadImage) and job.path not in failed:
                    failed[job.path] = image
                    log.warning(f"skipping {job.path}: {image.reason}")
            if usable:
                latents = adapter.encode_images(to_pixels([image for _, image in usable]).to(adapter.device))
                for (job, _), latent in zip(usable, latents):
                    job.cache.put(job.key, {"latent": latent}, {"source": str(job.path), "vae": vae_identity})
            bar.update(len(chunk))
    return failed


def _reference_pixels(job: TextJob) -> "list[torch.Tensor]":
    """The job's reference images as (3, H, W) pixels, each fitted and flipped like its target."""
    pixels = []
    for path, placement, flip_x, flip_y in job.references:
        try:
            pixels.append(to_pixels([render(path, placement, flip_x, flip_y)])[0])
        except BadImage as err:
            raise EaselError(f"{path}: {err.reason} when read for the text cache, although the scan accepted it. "
                             "Remove or fix it and run again.") from None
    return pixels


def encode_texts(jobs: list[TextJob], adapter: "ModelAdapter", batch_size: int) -> None:
    """Encode captions (batched, with a progress bar) into their caches; one row per job (its references given to an
    encoder that reads them)."""
    import torch

    identity = adapter.identity("text_encoder")
    with _progress(len(jobs), "caching text embeddings", "caption") as bar, torch.no_grad():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            captions = [job.caption for job in chunk]
            if any(job.references for job in chunk):
                cond = adapter.encode_prompts(captions, references=[_reference_pixels(job) for job in chunk])
            else:
                cond = adapter.encode_prompts(captions)
            for row, job in enumerate(chunk):
                job.cache.put(job.key, {name: value[row] for name, value in cond.items()},
                              {"caption": job.caption, "text_encoder": identity})
            bar.update(len(chunk))


def stack_rows(rows: list[dict[str, "torch.Tensor"]]) -> "Conditioning":
    """Cached rows back into batch-first conditioning."""
    import torch

    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
