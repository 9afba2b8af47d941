"""The dataset job's steps, each a function of the dataset state and its config block."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from toolkit.paths import under
from toolkit.prep.dedupe import find_duplicates, phash
from toolkit.prep.filters import check_image
from toolkit.prep.pipeline import DatasetState, Item
from toolkit.prep.resize import center_crop_square, fit_max_side
from toolkit.prep.tagging import add_tag

if TYPE_CHECKING:
    from toolkit.config.prep import ConvertCaptionsConfig, DedupeConfig, FilterConfig, ResizeConfig, TagConfig


def _progress(items: list[Item], step: str) -> "tqdm[Item]":
    return tqdm(items, desc=step, unit="img", leave=False, disable=len(items) < 2)


def run_filter(state: DatasetState, config: "FilterConfig", step: str) -> None:
    """Drop unreadable, too small, oddly shaped and blurry images."""
    kept: list[Item] = []
    for item in _progress(state.items, step):
        image = state.open(item, step)
        if image is None:
            continue
        verdict, measures = check_image(image, blur_threshold=config.blur_threshold, min_size=config.min_size,
                                        min_aspect=config.min_aspect, max_aspect=config.max_aspect)
        item.measures.update(measures)
        if verdict is None:
            kept.append(item)
        else:
            state.drop(item, step, verdict.reason, verdict.detail, verdict.option)
    state.items = kept


def run_dedupe(state: DatasetState, config: "DedupeConfig", step: str) -> None:
    """Drop near-duplicates, keeping the largest (or first) image of each group."""
    readable: list[Item] = []
    hashes: list[int] = []
    pixels: list[int] = []
    for item in _progress(state.items, step):
        image = state.open(item, step)
        if image is None:
            continue
        readable.append(item)
        hashes.append(phash(image))
        pixels.append(image.width * image.height)
        item.measures["phash"] = f"{hashes[-1]:016x}"
    order = list(range(len(readable)))
    if config.keep == "largest":
        order.sort(key=lambda i: -pixels[i])
    duplicates = {d.index: d for d in find_duplicates(hashes, order, config.max_distance)}
    for index, duplicate in sorted(duplicates.items()):
        state.drop(readable[index], step, "duplicate",
                   f"of {readable[duplicate.of].name}, distance {duplicate.distance}")
    state.items = [item for index, item in enumerate(readable) if index not in duplicates]


def run_resize(state: DatasetState, config: "ResizeConfig", step: str) -> None:
    """Rewrite each image resized into the work folder (same name and format); images already the right size stay as they are."""
    kept: list[Item] = []
    folder = state.work_dir / f"{len(state.steps):02d}_resize"
    for item in _progress(state.items, step):
        image = state.open(item, step)
        if image is None:
            continue
        if config.mode == "center_crop":
            resized = center_crop_square(image, config.size, config.resample)
        else:
            resized = fit_max_side(image, config.size, config.resample, config.upscale)
        item.measures.update({"width": resized.width, "height": resized.height})
        kept.append(item)
        if resized.size == image.size:
            continue  # already the right size: the file is kept as it is (re-encoding a JPEG would only lose quality)
        target = under(folder, item.name, what="image name")
        target.parent.mkdir(parents=True, exist_ok=True)
        resized.save(target, quality=config.quality)
        item.path = target
        item.measures["resized_from"] = f"{image.width}x{image.height}"
    state.items = kept


def run_convert_captions(state: DatasetState, config: "ConvertCaptionsConfig", step: str) -> None:
    """Choose the caption formats the output folder gets."""
    state.caption_formats = list(config.to)


def run_tag(state: DatasetState, config: "TagConfig", step: str) -> None:
    """Add the tag to every caption that lacks it (an image without a caption gets the tag alone)."""
    for item in state.items:
        item.caption = add_tag(item.caption, config.text, config.position, config.separator)
