"""What the loader hands out and draws from: a batch (``TrainBatch``), the entries an epoch shuffles (``Entry``), the
random choices for one of them (``Draw``), where an iteration stands (``LoaderPosition``), and the seeded generators
behind every choice (``rng_for``). ``toolkit.data.loader.TrainData`` makes and reads them."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.data.buckets import Placement, place
from toolkit.data.scan import ImageRecord
from toolkit.errors import EaselError
from toolkit.models.base import ImageInfo

if TYPE_CHECKING:
    import torch

    from toolkit.registry import ReferenceImages


@dataclass
class LoaderPosition:
    """Where the loader stands: an epoch and the global batches of it already consumed."""

    epoch: int = 0
    index: int = 0
    """Global batches of this epoch already consumed."""


@dataclass
class TrainBatch:
    """One rank's share of one global batch; every row has the same bucket size."""

    pixels: "torch.Tensor | None"
    """(B, 3, H, W) float32 in [-1, 1] on the CPU when latents are not cached."""
    latents: "torch.Tensor | None"
    """(B, C, h, w) scaled latents when cached, on the CPU in the dtype the VAE produced."""
    captions: list[str]
    """Final captions after the caption rules."""
    cond: "dict[str, torch.Tensor] | None"
    """Cached text conditioning, batch-first on the CPU, when ``prepare(cache_text=True)`` ran."""
    image_info: list[ImageInfo]
    paths: list[Path]
    reference_latents: "list[torch.Tensor] | None" = None
    """Edit pairs with cached latents: one (B, C, h, w) tensor per reference slot (``control_path`` folder)."""
    reference_pixels: "list[torch.Tensor] | None" = None
    """Edit pairs: one (B, 3, H, W) tensor in [-1, 1] per reference slot, when latents are not cached or the
    text encoder reads the references and text is not cached."""
    masks: "torch.Tensor | None" = None
    """(B, 1, H, W) loss masks in [mask_min_value, 1] when a dataset of the batch has masks (ones for the others)."""
    loss_weights: "torch.Tensor | None" = None
    """(B,) loss weight of each row (``loss_multiplier``, ``train.reg_weight``) when one is not 1."""
    network_weight: float = 1.0
    """The adapter's weight for this batch (``network_weight``: a batch holds one dataset's weight)."""


@dataclass(frozen=True)
class Entry:
    """One image at one resolution, one repeat: the unit the epoch order shuffles."""

    dataset: int
    record: int
    resolution: int
    repeat: int
    placement: Placement
    """Centered placement (random crops are drawn per epoch from it)."""
    cached: bool
    """Whether its latents come from a cache."""
    references: tuple[Placement, ...] = ()
    """Centered placements of its reference images (edit pairs), one per reference slot."""

    @property
    def group(self) -> tuple:
        """Entries of one group may share a batch (same bucket, caching and reference sizes)."""
        key = self.placement.bucket[0], self.placement.bucket[1], self.cached
        return (*key, tuple(p.bucket for p in self.references)) if self.references else key


@dataclass(frozen=True)
class Draw:
    """The random choices made for one entry in one epoch."""

    entry: Entry
    record: ImageRecord
    placement: Placement
    flip_x: bool
    flip_y: bool
    caption: str
    references: tuple[Placement, ...] = ()
    """Placements of its references this epoch (a reference fitted like its target shares the target's crop)."""


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator that depends only on ``seed`` and ``parts`` (not on Python's hash seed)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def reference_placements(record: ImageRecord, bucket: tuple[int, int], spec: "ReferenceImages | None") -> tuple[Placement, ...]:
    """Centered placements of ``record``'s references for a target in ``bucket``, sized as ``spec`` says."""
    if not record.references:
        return ()
    if spec is None:
        raise EaselError(f"{record.path} has reference images (datasets[].control_path), but this architecture takes none.")
    return tuple(place((ref.width, ref.height), spec.fitted_size((ref.width, ref.height), bucket)) for ref in record.references)
