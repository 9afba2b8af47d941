"""Control-image preprocessors (numpy + PIL), the edge agreement metric, and depth / pose from tiny random models
saved to disk and loaded through transformers as a user's model would be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.control.conftest import shapes
from toolkit.config.control import ControlNetConfig, PreprocessConfig
from toolkit.control import estimators
from toolkit.control.edges import edge_agreement, edge_f1
from toolkit.control.preprocess import apply, canny_edges, luminance
from toolkit.errors import EaselError


def _square(size: int = 64, offset: int = 0) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).rectangle([16 + offset, 16, 47 + offset, 47], fill="black")
    return image


def test_canny_finds_the_outline_once_and_nothing_in_flat_areas() -> None:
    edges = canny_edges(_square())
    rows, cols = np.nonzero(edges)
    assert edges.sum() == pytest.approx(4 * 31, abs=8), "a one-pixel outline of a 32 px square"
    assert rows.min() >= 14 and rows.max() <= 48 and cols.min() >= 14 and cols.max() <= 48
    assert not edges[20:44, 20:44].any() and not edges[:12].any()
    assert not canny_edges(Image.new("RGB", (32, 32), (90, 120, 200))).any()


def test_canny_thresholds_keep_strong_edges_and_drop_weak_ones() -> None:
    faint = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(faint).rectangle([16, 16, 47, 47], fill=(118, 118, 118))  # a step of 10: Sobel |gx|+|gy| about 40
    assert canny_edges(faint, low=20, high=30).sum() > 100
    assert not canny_edges(faint, low=100, high=200).any()


def test_image_preprocessors_keep_the_size_and_draw_white_structure_on_black() -> None:
    image = shapes((80, 48))
    for kind in ("canny", "softedge", "lineart"):
        out = np.asarray(apply(image, PreprocessConfig(type=kind)))
        assert out.shape == (48, 80, 3) and (out[..., 0] == out[..., 1]).all()
        assert out[2:6, 2:6].max() < 30, f"{kind}: flat background is black"
        assert out.max() == 255, f"{kind}: edges are white"
    gray = apply(image, PreprocessConfig(type="grayscale"))
    assert np.array_equal(np.asarray(gray)[..., 0], np.asarray(image.convert("L")))
    tiled = np.asarray(apply(image, PreprocessConfig(type="tile", downscale=8)), dtype=float)
    assert np.abs(tiled.mean(axis=(0, 1)) - np.asarray(image, dtype=float).mean(axis=(0, 1))).max() < 12
    assert np.abs(np.diff(tiled, axis=1)).max() < np.abs(np.diff(np.asarray(image, dtype=float), axis=1)).max() / 2
    assert apply(image, PreprocessConfig()).tobytes() == image.tobytes()


def test_lineart_marks_dark_strokes_not_light_ones() -> None:
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.line([(10, 10), (10, 54)], fill="black", width=2)
    draw.line([(50, 10), (50, 54)], fill="white", width=2)
    lines = luminance(apply(image, PreprocessConfig(type="lineart")))
    assert lines[20:44, 9:12].mean() > 100 and lines[20:44, 49:52].mean() < 10


def test_preprocess_config_forms_and_mistakes() -> None:
    assert ControlNetConfig(path="x/y", preprocess="Canny").preprocess.type == "canny"
    with pytest.raises(ValueError, match="preprocess type 'depth' needs model"):
        PreprocessConfig(type="depth")
    with pytest.raises(ValueError, match="takes no model"):
        PreprocessConfig(type="canny", model="x/y")
    with pytest.raises(ValueError, match="low_threshold .* is above high_threshold"):
        PreprocessConfig(type="canny", low_threshold=200, high_threshold=100)
    with pytest.raises(ValueError, match="start .* must be below end"):
        ControlNetConfig(path="x/y", start=0.5, end=0.5)


def test_edge_f1_and_agreement() -> None:
    square = canny_edges(_square())
    assert edge_f1(square, square) == 1.0
    assert edge_f1(square, canny_edges(_square(offset=1))) == 1.0, "a line moved by a pixel is kept"
    assert edge_f1(square, canny_edges(_square(offset=12)), tolerance=0) < 0.6
    assert edge_f1(square, np.zeros_like(square)) == 0.0
    blank = Image.new("RGB", (64, 64), "white")
    assert edge_agreement(_square(), blank) == 0.0
    assert edge_agreement(shapes((128, 128)), shapes()) > 0.9, "the input is compared at the output's size"


def test_missing_model_is_named_before_anything_loads(tmp_path: Path) -> None:
    assert "cannot load the depth model" in (estimators.model_problem("depth", str(tmp_path / "none")) or "")
    assert "holds no config.json" in (estimators.model_problem("pose", str(tmp_path)) or "")
    offline = estimators.model_problem("depth", "nobody/no-depth") or ""
    assert "hub id (not in the hub cache" in offline and "This machine is offline: HF_HUB_OFFLINE is set" in offline
    assert estimators.model_problem("depth", "nobody/no-depth", hub=False) is None, "config validation takes hub ids as given"
    with pytest.raises(EaselError, match=r"^preprocess.model: cannot load the depth model 'nobody/no-depth'\. Tried it as"):
        apply(_square(), PreprocessConfig(type="depth", model="nobody/no-depth"))


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory: Any) -> Path:
    """A tiny random Depth Anything model (with its image processor) saved as a folder."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor
    from transformers import Dinov2Config

    folder = tmp_path_factory.mktemp("tiny_depth")
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, patch_size=14,
                            image_size=28, out_features=["stage1", "stage2"], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16],
                                 fusion_hidden_size=8, head_hidden_size=8, reassemble_factors=[2, 1])
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=False, ensure_multiple_of=14).save_pretrained(folder)
    return folder


def test_depth_from_a_local_model(depth_model: Path) -> None:
    image = shapes((60, 40))
    depth = np.asarray(apply(image, PreprocessConfig(type="depth", model=str(depth_model))))
    assert depth.shape == (40, 60, 3) and (depth[..., 0] == depth[..., 2]).all() and depth.std() > 0


@pytest.fixture(scope="module")
def pose_model(tmp_path_factory: Any) -> Path:
    """A tiny random VitPose model (with its image processor) saved as a folder."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    folder = tmp_path_factory.mktemp("tiny_pose")
    backbone = VitPoseBackboneConfig(image_size=[32, 24], patch_size=[8, 8], hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, out_indices=[2])
    torch.manual_seed(0)
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).save_pretrained(folder)
    VitPoseImageProcessor(size={"height": 32, "width": 24}).save_pretrained(folder)
    return folder


def test_pose_from_a_local_model_is_drawn_as_an_openpose_skeleton(pose_model: Path) -> None:
    image = shapes((48, 64))
    keypoints, scores = estimators._keypoints(str(pose_model), image)
    assert keypoints.shape == (17, 2) and scores.shape == (17,)
    assert (keypoints >= 0).all() and (keypoints[:, 0] <= 48).all() and (keypoints[:, 1] <= 64).all()
    drawn = np.asarray(estimators.draw_pose((48, 64), keypoints, np.ones(17)))
    assert drawn.shape == (64, 48, 3) and drawn.any()
    assert not np.asarray(estimators.draw_pose((48, 64), keypoints, np.zeros(17))).any(), "unseen keypoints are not drawn"
    assert apply(image, PreprocessConfig(type="pose", model=str(pose_model))).size == (48, 64)
