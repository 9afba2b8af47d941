"""Control images made by a model the user names: depth (transformers' ``depth-estimation`` pipeline, e.g. Depth
Anything) and pose (VitPose keypoints drawn as an OpenPose skeleton).

Nothing is downloaded unless the hub may be reached (``toolkit.models.hub``); ``model_problem`` tells, without loading
anything, whether a model can be found (what the dry run checks). Pose estimation takes the whole image as one person's box (VitPose
needs a box per person and easel ships no person detector), so it draws one skeleton per image; the box is resized to
the model's input and each keypoint is its heatmap's peak (transformers' own VitPose pre- and post-processing need
scipy or torchvision, which easel does not require).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from toolkit.control.names import MODEL_PREPROCESSORS
from toolkit.errors import EaselError
from toolkit.models.hub import (TRANSFORMERS_FOLDER, in_hub_cache, load_error, looks_like_hub_id, not_found_text,
                                offline_reason, pretrained_location)

if TYPE_CHECKING:
    from PIL import Image

_LOADED: dict[tuple[str, str], Any] = {}
"""Estimators by (kind, model), loaded once per process."""
WHAT = "preprocess.model"
"""The key a depth / pose model is given under."""

# OpenPose's 18 keypoints in COCO-17 order (neck, its 2nd point, is the shoulders' midpoint), the limbs between them
# (0-based OpenPose indices) and their colours: the drawing OpenPose ControlNets were trained on.
_COCO_TO_OPENPOSE = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
          (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
            (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
            (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
COCO_KEYPOINTS = 17
"""Keypoints of a COCO-trained pose model (what the OpenPose drawing maps)."""
KEYPOINT_THRESHOLD = 0.3
"""Keypoints VitPose scores below this are not drawn."""


def model_problem(kind: str, name: str, hub: bool = True) -> str | None:
    """Why the ``kind`` model ``name`` cannot be loaded, found without loading it; None when it can (or may). With
    ``hub`` False a hub id is taken as it is (config validation: whether it is cached matters only to a run). A model
    that is not found gets ``toolkit.models.hub``'s paragraph (what was tried, whether the machine is offline)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"the folder '{name}' holds no config.json (not a transformers model)"
    if path.exists():
        return f"the {kind} model '{name}' is a file; give a model folder (saved with save_pretrained) or a hub id"
    if not looks_like_hub_id(name) or (hub and offline_reason() is not None and not in_hub_cache(name, "config.json")):
        return not_found_text(WHAT, name, local_kind=TRANSFORMERS_FOLDER, label=f"the {kind} model").rstrip(".")
    return None


def _loaded(kind: str, name: str, load: Callable[[str, dict[str, Any]], Any]) -> Any:
    """The ``kind`` estimator of model ``name``, loaded the first time by ``load(location, from_pretrained options)``."""
    key = (kind, name)
    if key not in _LOADED:
        problem = model_problem(kind, name)
        if problem:
            raise EaselError(f"{WHAT}: {problem}.")
        source, options = pretrained_location(name, WHAT, f"the {kind} model")
        try:
            _LOADED[key] = load(source, options)
        except (OSError, ValueError, KeyError) as err:
            raise EaselError(f"{load_error(WHAT, f'the {kind} model', name, source, err)} A {kind} model is e.g. "
                             f"{MODEL_PREPROCESSORS[kind]}.") from err
    return _LOADED[key]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def depth(name: str, image: "Image.Image") -> "Image.Image":
    """The depth map transformers' ``depth-estimation`` pipeline makes with ``name``, near = white, at the image's size."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation, pipeline

    def load(source: str, options: dict[str, Any]) -> Any:
        return pipeline("depth-estimation", model=AutoModelForDepthEstimation.from_pretrained(source, **options),
                        image_processor=AutoImageProcessor.from_pretrained(source, **options), device=_device())

    estimator = _loaded("depth", name, load)
    result = estimator(image.convert("RGB"))["depth"]
    return result.convert("L").resize(image.size, Image.Resampling.BICUBIC).convert("RGB")


def _keypoints(name: str, image: "Image.Image") -> "tuple[Any, Any]":
    """VitPose's COCO-17 keypoints (x, y in image pixels) and scores for one person filling the image: the image
    resized to the model's input (mean / std from its image processor), each heatmap's peak mapped back."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, VitPoseForPoseEstimation

    def load(source: str, options: dict[str, Any]) -> tuple[Any, Any]:
        return (AutoImageProcessor.from_pretrained(source, **options),
                VitPoseForPoseEstimation.from_pretrained(source, **options).to(_device()).eval())

    processor, model = _loaded("pose", name, load)
    height, width = processor.size["height"], processor.size["width"]
    rgb = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    pixels = (rgb - np.asarray(processor.image_mean, dtype=np.float32)) / np.asarray(processor.image_std, dtype=np.float32)
    with torch.no_grad():
        heatmaps = model(pixel_values=torch.from_numpy(pixels).permute(2, 0, 1)[None].to(model.device, model.dtype)).heatmaps
    maps = heatmaps[0].float().cpu().numpy()
    if len(maps) != COCO_KEYPOINTS:
        raise EaselError(f"preprocess.model: the pose model '{name}' finds {len(maps)} keypoints; the OpenPose drawing needs "
                         f"COCO's {COCO_KEYPOINTS} (a VitPose model trained on COCO, e.g. {MODEL_PREPROCESSORS['pose']}).")
    rows, cols = maps.shape[1:]
    peaks = maps.reshape(len(maps), -1).argmax(axis=1)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    x = (peaks % cols + 0.5) * image.width / cols
    y = (peaks // cols + 0.5) * image.height / rows
    return np.stack([x, y], axis=1), scores


def draw_pose(size: tuple[int, int], keypoints: Any, scores: Any, threshold: float = KEYPOINT_THRESHOLD) -> "Image.Image":
    """COCO-17 keypoints drawn as OpenPose's 18-point skeleton (coloured limbs and joints on black)."""
    from PIL import Image, ImageDraw

    points: list[tuple[float, float] | None] = []
    for coco in _COCO_TO_OPENPOSE:
        if coco is None:  # the neck: between the shoulders, when both are seen
            seen = scores[5] >= threshold and scores[6] >= threshold
            points.append(tuple((keypoints[5] + keypoints[6]) / 2) if seen else None)
        else:
            points.append(tuple(keypoints[coco]) if scores[coco] >= threshold else None)
    canvas = Image.new("RGB", size)
    limbs = Image.new("RGB", size)
    width = max(2, round(min(size) / 128))
    draw = ImageDraw.Draw(limbs)
    for (a, b), colour in zip(_LIMBS, _COLOURS):
        if points[a] is not None and points[b] is not None:
            draw.line([points[a], points[b]], fill=colour, width=2 * width)
    canvas = Image.blend(canvas, limbs, 0.6)
    draw = ImageDraw.Draw(canvas)
    for point, colour in zip(points, _COLOURS):
        if point is not None:
            draw.ellipse([point[0] - width, point[1] - width, point[0] + width, point[1] + width], fill=colour)
    return canvas


def pose(name: str, image: "Image.Image") -> "Image.Image":
    """An OpenPose-style skeleton of the person in ``image``, found by the VitPose model ``name``."""
    keypoints, scores = _keypoints(name, image)
    return draw_pose(image.size, keypoints, scores)


def estimate(kind: str, name: str, image: "Image.Image") -> "Image.Image":
    """The ``kind`` ('depth' or 'pose') control image of ``image`` made by model ``name``."""
    if kind == "depth":
        return depth(name, image)
    if kind == "pose":
        return pose(name, image)
    raise EaselError(f"preprocess: '{kind}' needs no model (only depth and pose do).")
