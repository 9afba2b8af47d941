"""TensorCache's memory budget: rows read from disk stay in memory until the budget is spent."""

from __future__ import annotations

from pathlib import Path

import torch

from toolkit.data.cache import TensorCache


def test_rows_read_from_disk_are_kept_within_the_budget(tmp_path: Path) -> None:
    row = {"prompt_embeds": torch.ones(4, 8)}  # 128 bytes
    writer = TensorCache(tmp_path, memory=False)
    for key in ("a", "b", "c"):
        writer.put(key, row)
    cache = TensorCache(tmp_path, memory=False, memory_budget=300)
    assert torch.equal(cache.get("a")["prompt_embeds"], row["prompt_embeds"])
    cache.get("b")
    cache.get("c")  # over the budget: read, not kept
    for key in ("a", "b", "c"):
        (tmp_path / f"{key}.safetensors").unlink()
    assert torch.equal(cache.get("a")["prompt_embeds"], row["prompt_embeds"]) and "b" in cache.kept
    assert "c" not in cache.kept and cache.budget == 300 - 2 * 128
    assert not TensorCache(tmp_path, memory=False).kept
