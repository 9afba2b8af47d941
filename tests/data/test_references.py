"""Edit pairs: ``control_path`` folders paired by file name, fitted, flipped, cached and batched with their targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.helpers import FakeAdapter, dataset, write_image
from toolkit.config.blocks import DatasetConfig
from toolkit.data.loader import TrainData
from toolkit.data.scan import scan_dataset
from toolkit.errors import EaselError
from toolkit.registry import ReferenceImages

TARGET = ReferenceImages(count=2)
OWN = ReferenceImages(count=1, size="own", max_area=32 * 32, multiple=16)


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """targets/ (a.png 64x48, b.png 48x64, c.png without a reference) and refs/ (a.jpg + a.png, b.webp)."""
    write_image(tmp_path / "targets" / "a.png", (64, 48), (200, 30, 30), caption="make it red")
    write_image(tmp_path / "targets" / "b.png", (48, 64), (30, 200, 30), caption="make it green")
    write_image(tmp_path / "targets" / "c.png", (64, 48), caption="no pair")
    write_image(tmp_path / "refs" / "a.jpg", (96, 72), (10, 10, 200))
    write_image(tmp_path / "refs" / "a.png", (96, 72), (250, 250, 250))
    write_image(tmp_path / "refs" / "b.webp", (48, 64), (10, 200, 200))
    return tmp_path


def test_config_takes_a_folder_a_list_and_ai_toolkits_numbered_keys() -> None:
    assert DatasetConfig(folder_path="x", control_path="refs").control_path == ["refs"]
    assert DatasetConfig(folder_path="x", control_path=["r1", "r2"]).control_path == ["r1", "r2"]
    assert DatasetConfig(folder_path="x", control_path="").control_path == []
    numbered = DatasetConfig.model_validate({"folder_path": "x", "control_path_1": "r1", "control_path_2": "r2"})
    assert numbered.control_path == ["r1", "r2"]


def test_scan_pairs_by_stem_and_counts_targets_without_a_reference(pairs: Path) -> None:
    scan = scan_dataset(dataset(pairs / "targets", control_path=str(pairs / "refs")))
    by_name = {record.path.name: record for record in scan.records}
    assert sorted(by_name) == ["a.png", "b.png"]
    assert [ref.path.name for ref in by_name["a.png"].references] == ["a.jpg"], "the first of IMAGE_EXTENSIONS wins"
    assert (by_name["b.png"].references[0].width, by_name["b.png"].references[0].height) == (48, 64)
    assert scan.skipped == {f"no reference image in {pairs / 'refs'}": ["c.png"]}


def test_control_folder_inside_the_dataset_is_not_read_as_targets(pairs: Path) -> None:
    write_image(pairs / "targets" / "control" / "a.png", (64, 48))
    scan = scan_dataset(dataset(pairs / "targets", control_path=str(pairs / "targets" / "control")))
    assert [record.path.name for record in scan.records] == ["a.png"]


def test_missing_control_folder_is_a_user_error(pairs: Path) -> None:
    with pytest.raises(EaselError, match="control folder .*nowhere.* does not exist"):
        scan_dataset(dataset(pairs / "targets", control_path=str(pairs / "nowhere")))


def _data(pairs: Path, spec: ReferenceImages | None, **fields: object) -> TrainData:
    config = dataset(pairs / "targets", control_path=str(pairs / "refs"), resolution=[64], **fields)
    return TrainData([config], trigger_word=None, batch_size=2, seed=3, bucket_divisibility=16, references=spec)


def _batches(data: TrainData, count: int) -> list:
    source = data.batches()
    return [next(source)[0] for _ in range(count)]


def test_references_fitted_to_the_targets_bucket(pairs: Path) -> None:
    data = _data(pairs, TARGET)
    assert data.steps_per_epoch() == 2, "a and b have different buckets"
    for batch in _batches(data, 2):
        (refs,) = batch.reference_pixels
        assert refs.shape == batch.pixels.shape and batch.reference_latents is None
        assert (refs[0, 1].mean() > 0) == (batch.paths[0].name == "b.png"), "a's reference is blue, b's cyan"


def test_references_keep_their_own_aspect_and_split_batches(pairs: Path) -> None:
    (ref,) = _data(pairs, OWN).scans[0].records[0].references
    assert OWN.fitted_size((ref.width, ref.height), (64, 48)) == (32, 16)
    assert ReferenceImages(size="own", area=64 * 64).fitted_size((96, 72), (16, 16)) == (64, 48)
    batch = next(_data(pairs, OWN).batches())[0]
    assert batch.reference_pixels[0].shape[-2:] != batch.pixels.shape[-2:]


def _ramp_on_left(pixels: torch.Tensor) -> bool:
    """write_image puts a gradient stripe on the left quarter."""
    across = pixels.diff(dim=-1).abs()
    return bool(across[..., :4].mean() > across[..., -4:].mean())


def test_flips_apply_to_target_and_reference_together(pairs: Path) -> None:
    data = _data(pairs, TARGET, flip_x=True)
    flips = []
    for epoch in range(4):
        for item in range(len(data.entries)):
            batch = data.make_batch([item], epoch)
            flips.append(data.draw(item, epoch).flip_x)
            assert _ramp_on_left(batch.pixels[0]) == _ramp_on_left(batch.reference_pixels[0][0]) != flips[-1]
    assert any(flips) and not all(flips)


def test_cached_references_are_latents_encoded_once(pairs: Path) -> None:
    data = _data(pairs, TARGET, cache_latents=True, flip_x=True)
    adapter = FakeAdapter()
    data.prepare(adapter)
    assert adapter.encoded_images == 8, "2 targets + 2 references, each in both orientations"
    batch = next(data.batches())[0]
    assert batch.reference_pixels is None and batch.reference_latents[0].shape == batch.latents.shape


def test_an_architecture_without_references_refuses_edit_pairs(pairs: Path) -> None:
    with pytest.raises(EaselError, match="takes none"):
        _data(pairs, None)


class SeeingAdapter(FakeAdapter):
    """A text encoder that reads the references (as Qwen-Image-Edit's does)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def encode_prompts(self, prompts: list[str], references: list[list[torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        cond = super().encode_prompts(prompts)
        if references is not None:
            self.seen += [len(refs) for refs in references]
            shift = torch.stack([refs[0].mean() for refs in references])
            cond = {key: value + shift.view(-1, *[1] * (value.dim() - 1)) for key, value in cond.items()}
        return cond


def test_text_rows_are_keyed_by_the_references_the_encoder_reads(pairs: Path) -> None:
    write_image(pairs / "targets" / "c.png", (64, 48), caption="make it red")
    write_image(pairs / "refs" / "c.png", (96, 72), (240, 240, 0))
    seeing = ReferenceImages(text_encoder_sees=True)
    data = _data(pairs, seeing, cache_latents=True)
    adapter = SeeingAdapter()
    data.prepare(adapter, cache_text=True)
    assert adapter.seen == [1, 1, 1], "a and c share a caption but not a reference: three rows"
    rows = {path.name: cond for batch in _batches(data, 2) for path, cond in zip(batch.paths, batch.cond["pooled"])}
    assert not torch.allclose(rows["a.png"], rows["c.png"])
    plain = _data(pairs, TARGET, cache_latents=True)
    plain.prepare(FakeAdapter(), cache_text=True)
    assert next(plain.batches())[0].reference_pixels is None


class StepAdapter(FakeAdapter):
    """Records what ``with_references`` got; predicts zeros."""

    def __init__(self, spec: ReferenceImages) -> None:
        from types import SimpleNamespace

        super().__init__()
        self.arch = SimpleNamespace(spec=SimpleNamespace(references=spec))
        self.given: list[list[torch.Tensor]] = []

    def with_references(self, cond: dict[str, torch.Tensor], references: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.given.append(references)
        return {**cond, "reference": references[0]}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor], image_info=None) -> torch.Tensor:
        assert cond["reference"].shape[0] == noisy.shape[0]
        return torch.zeros_like(noisy)


@pytest.mark.parametrize("cached", [False, True])
def test_the_step_encodes_references_and_adds_them_to_the_conditioning(pairs: Path, cached: bool) -> None:
    from types import SimpleNamespace

    from toolkit.models.base import NoiseSchedule
    from toolkit.train.noise import Objective
    from toolkit.train.step import DiffusionStep

    data = _data(pairs, TARGET, cache_latents=cached)
    adapter = StepAdapter(TARGET)
    data.prepare(adapter)
    batch = next(data.batches())[0]
    network = SimpleNamespace(cast_inputs=lambda on: on)
    step = DiffusionStep(adapter, network, Objective(NoiseSchedule("flowmatch", "flow")), loss_type="mse", huber_c=0.1,
                         train_text_encoder=False, generator=torch.Generator().manual_seed(0), cast_inputs=False)
    step(batch)
    (references,) = adapter.given
    expected = batch.reference_latents[0] if cached else torch.nn.functional.avg_pool2d(batch.reference_pixels[0], 8)
    assert len(references) == 1 and torch.equal(references[0], expected)
