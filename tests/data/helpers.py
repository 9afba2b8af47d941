"""Small builders for data tests: images on disk and a fake model adapter."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.config.blocks import DatasetConfig


def write_image(path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30),
                fmt: str | None = None, caption: str | None = None, mode: str = "RGB") -> Path:
    """A solid image with a gradient stripe on the left and a dark band at the top (so flips and crops
    change pixels), plus an optional .txt caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:] = color
    array[: max(1, size[1] // 4)] //= 2
    array[:, : max(1, size[0] // 4)] = np.linspace(0, 255, max(1, size[0] // 4), dtype=np.uint8)[None, :, None]
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims ``width x height`` (a decompression bomb when large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))
    return path


def dataset(folder: Path, **fields: object) -> DatasetConfig:
    """A DatasetConfig for ``folder`` with the given fields."""
    return DatasetConfig(folder_path=str(folder), **fields)


def synthetic_data(sizes: list[tuple[int, int]], *, resolutions: list[int], divisibility: int, batch_size: int,
                   rank: int = 0, world_size: int = 1, repeats: int = 1, seed: int = 1):
    """TrainData over images that exist only as scanned sizes (no files: for properties of the order)."""
    from unittest import mock

    from toolkit.data.loader import TrainData
    from toolkit.data.scan import DatasetScan, ImageRecord

    records = [ImageRecord(Path(f"/img{i}.png"), w, h, "c", "file") for i, (w, h) in enumerate(sizes)]
    config = DatasetConfig(folder_path="/nowhere", resolution=resolutions, num_repeats=repeats)
    with mock.patch("toolkit.data.loader.scan_dataset", return_value=DatasetScan(Path("/nowhere"), records=records)):
        return TrainData([config], trigger_word=None, batch_size=batch_size, seed=seed, bucket_divisibility=divisibility,
                         rank=rank, world_size=world_size)


class FakeAdapter:
    """Just enough of ModelAdapter for the data pipeline; counts what it encodes."""

    def __init__(self, vae: str = "vae-1", text: str = "te-1"):
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.versions = {"vae": vae, "text_encoder": text}
        self.text_encoders = {"text_encoder": torch.nn.Linear(2, 2)}
        self.encoded_images = 0
        self.image_batches: list[int] = []
        self.encoded_prompts: list[str] = []
        self.moves: list[tuple[list[str], str]] = []

    def identity(self, component: str) -> str:
        return f"fake|{self.versions[component]}|{component}"

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        self.encoded_images += pixels.shape[0]
        self.image_batches.append(pixels.shape[0])
        return torch.nn.functional.avg_pool2d(pixels, 8)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        self.encoded_prompts += prompts
        rows = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little")
            rows.append(torch.randn(3, 4, generator=torch.Generator().manual_seed(seed)))
        embeds = torch.stack(rows)
        return {"prompt_embeds": embeds, "pooled": embeds.mean(1)}

    def move(self, names: list[str], device: str) -> None:
        self.moves.append((names, str(device)))
        for name in names:
            self.text_encoders[name].to(device)
