"""Merging LoRAs into one (concat: exact; SVD: truncated) and rank resizing, checked on the updates."""

import pytest
import torch

from toolkit.errors import EaselError
from toolkit.lora_io.files import LoraFile
from toolkit.lora_io.model import delta_weight
from toolkit.lora_io.ops import RankRule, merge_loras, resize_lora

from tests.lora_io.helpers import random_lora

TARGETS = {"unet": ["to_q", "proj_in", "conv1"], "text_encoder": ["q_proj"]}


def _file(adapter, kind="lora", seed=0, rank=4) -> LoraFile:
    return LoraFile.from_state_dict(random_lora(adapter.components(), TARGETS, kind=kind, rank=rank, seed=seed), "sd15")


def _shapes(adapter, lora: LoraFile) -> dict:
    from toolkit.lora_io.model import target_layer

    return {key: tuple(target_layer(adapter.components(), m).weight.shape) for key, m in lora.modules.items()}


def test_concat_merge_is_exact(adapters):
    adapter = adapters["sd15"]
    first, second = _file(adapter, seed=1), _file(adapter, seed=2, rank=2)
    merged, report = merge_loras([(first, 0.8), (second, -0.4)], "concat")
    assert set(merged) == set(first.modules)
    for key, module in merged.items():
        expected = 0.8 * delta_weight(first.modules[key]) - 0.4 * delta_weight(second.modules[key])
        assert module.rank == 6 and module.alpha == 6
        assert torch.allclose(delta_weight(module), expected, atol=1e-5)
    assert report.kept_energy == 1.0


def test_concat_refuses_lycoris_types(adapters):
    adapter = adapters["sd15"]
    with pytest.raises(EaselError, match="use mode: svd"):
        merge_loras([(_file(adapter), 1.0), (_file(adapter, kind="loha"), 1.0)], "concat")


def test_svd_merge_at_full_rank_is_exact_and_truncation_reports_energy(adapters):
    adapter = adapters["sd15"]
    first, second = _file(adapter, seed=1), _file(adapter, kind="loha", seed=2)
    shapes = _shapes(adapter, first)
    expected = {k: 0.5 * delta_weight(first.modules[k]) + 1.2 * delta_weight(second.modules[k], shapes[k]) for k in first.modules}
    full, report = merge_loras([(first, 0.5), (second, 1.2)], "svd", RankRule(rank=64), shapes)
    for key, module in full.items():
        assert torch.allclose(delta_weight(module), expected[key], atol=1e-4)
    assert report.kept_energy == pytest.approx(1.0)
    small, report = merge_loras([(first, 0.5), (second, 1.2)], "svd", RankRule(rank=2), shapes)
    assert {m.rank for m in small.values()} == {2}
    assert 0.0 < report.kept_energy < 1.0
    for entry in report.modules:
        residual = (expected[entry.key] - delta_weight(small[entry.key])).flatten(1)
        assert residual.pow(2).sum().item() == pytest.approx((1 - entry.kept_energy) * entry.total_energy, rel=1e-3, abs=1e-6)


def test_resize_at_full_rank_is_lossless(adapters):
    lora = _file(adapters["sd15"], seed=3, rank=4)
    resized, report = resize_lora(lora, RankRule(rank=4))
    for key, module in resized.items():
        assert module.rank == 4
        assert torch.allclose(delta_weight(module), delta_weight(lora.modules[key]), atol=1e-5)
    assert report.kept_energy == pytest.approx(1.0)


def test_resize_rules(adapters):
    lora = _file(adapters["sd15"], seed=4, rank=4)
    by_energy, report = resize_lora(lora, RankRule(energy=0.9))
    assert all(entry.kept_energy >= 0.9 - 1e-9 for entry in report.modules)
    assert all(entry.rank_after <= 4 for entry in report.modules)
    by_ratio, _ = resize_lora(lora, RankRule(sv_ratio=1.0001))
    assert {m.rank for m in by_ratio.values()} == {1}
    lines = report.lines()
    assert lines[0].startswith(f"{len(lora.modules)} modules, kept energy")


def test_rank_rule_choices():
    singular = torch.tensor([4.0, 2.0, 1.0, 0.0])
    assert RankRule(rank=2).choose(singular) == 2
    assert RankRule().choose(singular) == 3
    assert RankRule(sv_ratio=2.0).choose(singular) == 2
    assert RankRule(energy=16 / 21).choose(singular) == 1
    assert RankRule(energy=0.9).choose(singular) == 2
