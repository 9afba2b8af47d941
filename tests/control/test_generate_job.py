"""``generate.controlnets`` / ``generate.ip_adapter`` through run.py: control images preprocessed at the output size
and written beside each image, the A1111 metadata, LoRA tags and inline flags alongside; bad input is a config error
(with its YAML line) before any model loads, in the dry run too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

import run
from tests.control.conftest import shapes
from toolkit.config.control import PreprocessConfig
from toolkit.control.preprocess import apply
from toolkit.output import dump_yaml
from toolkit.sampling.pngmeta import parse_parameters, read_parameters

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, model: Path | str, arch: str, generate: dict[str, Any], name: str = "gen") -> Path:
    body = {"job": "generate", "config": {"name": name, "process": [{
        "type": "to_folder", "output_folder": str(tmp_path / name), "device": "cpu",
        "model": {"name_or_path": str(model), "arch": arch},
        "generate": {"width": 64, "height": 64, "sample_steps": 2, "guidance_scale": 1, **generate},
    }]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_yaml(body), encoding="utf-8")
    return path


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9]*.png") if "_control" not in p.name)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    shapes((96, 64)).save(folder / "house.png")
    return folder


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a model is loaded (the errors must come first)."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("toolkit.models.loading.load_model", refuse)


@pytest.mark.slow
def test_controlnet_img2img_with_lora_tags_and_flags(base: Callable, controlnet: Callable, inputs: Path, tmp_path: Path,
                                                     adapters: Any) -> None:
    from toolkit.testing.tiny import save_random_lora

    adapter = adapters["sd15"]
    save_random_lora(adapter.pipeline(), tmp_path / "loras" / "style.safetensors", adapter.lora_targets(False), seed=4)
    control = {"path": str(controlnet("sd15")), "preprocess": {"type": "canny", "low_threshold": 50, "high_threshold": 150},
               "scale": 0.8}
    generate = {"init_images": str(inputs), "strength": 0.7, "lora_dirs": [str(tmp_path / "loras")], "controlnets": [control],
                "sample_steps": 4, "prompts": ["a house <lora:style:1.5> --seed 9", "a house --seed 9"]}
    assert run.main([str(_config(tmp_path, base("sd15"), "sd15", generate))]) == 0
    styled, plain = _outputs(tmp_path / "gen")
    assert [styled.name, plain.name] == ["00000_9.png", "00001_9.png"] and Image.open(styled).size == (64, 64)
    control_file = tmp_path / "gen" / "00000_9_control0.png"
    expected = apply(shapes((96, 64)).resize((64, 64), Image.Resampling.LANCZOS), PreprocessConfig(type="canny", low_threshold=50,
                                                                                                  high_threshold=150))
    assert np.array_equal(_pixels(control_file), np.asarray(expected, dtype=np.float32)), "the canny map of the init image"
    prompt, _, params = parse_parameters(read_parameters(styled) or "")
    assert prompt == "a house <lora:style:1.5>" and params["Denoising strength"] == "0.7"
    assert params["ControlNet 0"] == (f"Module: canny, Model: {controlnet('sd15').name}, Weight: 0.8, Image: house.png, "
                                      "Guidance Start: 0, Guidance End: 1, Threshold A: 50, Threshold B: 150")
    assert np.abs(_pixels(styled) - _pixels(plain)).mean() > 1, "the LoRA still counts"
    without = {**generate, "controlnets": [], "prompts": ["a house --seed 9"]}
    assert run.main([str(_config(tmp_path, base("sd15"), "sd15", without, "plain"))]) == 0
    assert np.abs(_pixels(_outputs(tmp_path / "plain")[0]) - _pixels(plain)).mean() > 1, "the ControlNet counts"


def test_txt2img_takes_each_control_images_shape_and_folders_pair_by_name(base: Callable, controlnet: Callable,
                                                                           tmp_path: Path, capsys: Any) -> None:
    edges, poses = tmp_path / "edges", tmp_path / "poses"
    for folder in (edges, poses):
        folder.mkdir()
        shapes((128, 64)).save(folder / "wide.png")
        shapes((64, 128)).save(folder / "tall.png")
    two = {"prompts": ["a boat"], "seed": 1, "width": 128, "height": 128,
           "controlnets": [{"path": str(controlnet("sd15")), "image": str(edges)}, {"path": str(controlnet("sd15")), "image": str(poses)}]}
    assert run.main(["--dry-run", str(_config(tmp_path, base("sd15"), "sd15", two))]) == 0
    out = capsys.readouterr().out
    assert "0: 64x192, 2 steps, cfg 1, seed 1 +tall.png +tall.png: 'a boat'" in out, "2:1 at 128x128 pixels, sides of 64"
    assert "1: 192x64, 2 steps, cfg 1, seed 2 +wide.png +wide.png: 'a boat'" in out
    one = {"prompts": ["a boat"], "seed": 1, "controlnets": [{"path": str(controlnet("zimage")), "image": str(edges)}]}
    assert run.main([str(_config(tmp_path, base("zimage"), "zimage", one, "z"))]) == 0
    assert [Image.open(p).size for p in _outputs(tmp_path / "z")] == [(48, 96), (96, 48)]
    assert Image.open(tmp_path / "z" / "00001_2_control0.png").size == (96, 48)


def test_ip_adapter_in_the_generate_job(base: Callable, ip_adapter: Callable, tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    shapes().save(refs / "a.png")
    shapes().rotate(90).save(refs / "b.png")
    folder = ip_adapter("sd15")
    generate = {"prompts": ["a cat"], "seed": 3, "ip_adapter": {"path": str(folder / "ip-adapter.safetensors"), "images": str(refs),
                                                              "scale": 0.7}}
    assert run.main([str(_config(tmp_path, base("sd15"), "sd15", generate))]) == 0
    assert run.main([str(_config(tmp_path, base("sd15"), "sd15", {"prompts": ["a cat"], "seed": 3}, "plain"))]) == 0
    (made,), (plain,) = _outputs(tmp_path / "gen"), _outputs(tmp_path / "plain")
    assert parse_parameters(read_parameters(made) or "")[2]["IP-Adapter"] == "Model: ip-adapter, Weight: 0.7, Images: a.png; b.png"
    assert np.abs(_pixels(made) - _pixels(plain)).mean() > 1


def _fails(config: Path, *argv: str) -> str:
    import io
    from contextlib import redirect_stderr

    stream = io.StringIO()
    with redirect_stderr(stream):
        assert run.main([*argv, str(config)]) == 2
    return stream.getvalue()


def _line(config: Path, key: str) -> int:
    """The line of the config's last ``key:`` (a key of its own, not the end of a longer one)."""
    lines = config.read_text(encoding="utf-8").splitlines()
    return max(n for n, line in enumerate(lines, 1) if line.strip().removeprefix("- ").startswith(key + ":"))


def test_bad_control_input_is_a_config_error_before_any_model_loads(base: Callable, controlnet: Callable, inputs: Path,
                                                                     tmp_path: Path, capfd: Any, no_model_loads: None) -> None:
    square = tmp_path / "square.png"
    shapes((64, 64)).save(square)
    cases = [
        ("sd15", {"init_images": str(inputs), "controlnets": [{"path": str(controlnet("sd15")), "image": str(square)}]},
         "image", "the control image 'square.png' is 64x64 (aspect 1.00) but 'house.png', whose shape the output takes, "
                  "is 96x64 (aspect 1.50)"),
        ("sd15", {"controlnets": [{"path": str(controlnet("sdxl")), "image": str(square)}]}, "path",
         "does not fit architecture 'sd15': its config has addition_embed_type 'text_time', where 'sd15' ControlNets have "
         "None; it is a ControlNet for sdxl"),
        ("sdxl", {"controlnets": [{"path": str(controlnet("sd15")), "image": str(square)}]}, "path",
         "does not fit architecture 'sdxl'"),
        ("sd15", {"controlnets": [{"path": str(controlnet("sd15")), "image": str(square),
                                   "preprocess": {"type": "depth", "model": str(tmp_path / "no_depth")}}]}, "model",
         f"cannot load the depth model '{tmp_path / 'no_depth'}'. Tried it as a local path ('{tmp_path / 'no_depth'}' "
         "does not exist) and as a Hugging Face hub id (it is not one"),
        ("sd15", {"controlnets": [{"path": str(controlnet("sd15")), "image": str(square),
                                   "preprocess": {"type": "pose", "model": "nobody/no-pose"}}]}, "model",
         "cannot load the pose model 'nobody/no-pose'. Tried it as a local path"),
        ("sd15", {"controlnets": [{"path": str(controlnet("sd15")), "image": str(square),
                                   "preprocess": {"type": "pose", "model": "nobody/no-pose"}}]}, "model",
         "This machine is offline: HF_HUB_OFFLINE is set. To fix it, download it where there is internet "
         "(`hf download nobody/no-pose`"),
        ("sd15", {"controlnets": [{"path": str(tmp_path / "no_controlnet"), "image": str(square)}]}, "path",
         f"cannot load the ControlNet '{tmp_path / 'no_controlnet'}'. Tried it as a local path"),
        ("sd15", {"ip_adapter": {"path": str(tmp_path / "none.safetensors"), "images": str(square)}}, "path",
         f"cannot load the IP-Adapter '{tmp_path / 'none.safetensors'}'. Tried it as a local path"),
        ("zimage", {"controlnets": [{"path": str(controlnet("zimage")), "image": str(square), "start": 0.2}]}, "start",
         "'zimage' ControlNets act on every step"),
        ("sdxl", {"controlnets": [{"path": str(controlnet("sdxl", union=True)), "image": str(square), "mode": "cany"}]}, "mode",
         "mode 'cany' is not a control mode of 'sdxl' union ControlNets; did you mean 'canny'?"),
        ("zimage", {"ip_adapter": {"path": str(square), "images": str(square)}}, "ip_adapter",
         "architecture 'zimage' takes no IP-Adapters"),
        ("sd15", {"controlnets": [{"path": str(controlnet("sd15"))}]}, "path", "no control image: set image, or init_images"),
    ]
    for number, (arch, generate, key, message) in enumerate(cases):
        config = _config(tmp_path, base(arch), arch, {"prompts": ["x"], **generate}, f"bad{number}")
        for argv in (("--dry-run",), ()):
            err = _fails(config, *argv)
            assert message in err, (number, err)
            assert f"line {_line(config, key)}," in err, (number, err)
        assert not (tmp_path / f"bad{number}").exists()


def test_dry_run_with_controlnets_imports_no_torch(base: Callable, controlnet: Callable, inputs: Path, tmp_path: Path) -> None:
    generate = {"init_images": str(inputs), "prompts": ["a house"],
                "controlnets": [{"path": str(controlnet("sd15")), "preprocess": "softedge"}]}
    config = _config(tmp_path, base("sd15"), "sd15", generate)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import run; code = run.main(['--dry-run', {str(config)!r}]); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TORCH False" in result.stdout and "preprocess softedge" in result.stdout
    assert "controlnet 0: " in result.stdout and "reading the init image" in result.stdout


def test_every_architecture_with_controlnets_has_its_example(registry: Any) -> None:
    from toolkit.config.job import load_job_config

    for spec in {spec.name: spec for spec in registry.archs.values() if spec.controlnet is not None}.values():
        path = ROOT / "config" / "examples" / f"generate_controlnet_{spec.name}.yaml"
        loaded = load_job_config(path, registry)
        assert all(registry.arch(p.model.arch).spec.name == spec.name and p.generate.controlnets for p in loaded.processes)
