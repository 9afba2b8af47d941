"""Resolving name_or_path: folders, files, tiny models, pickle checkpoints; separate VAEs (hub ids: test_hub.py)."""

from pathlib import Path
from typing import Any

import pytest
import torch

from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models.loading import checkpoint_file, load_adapter, read_pickle_state_dict, resolve_source
from toolkit.models.tiny import cache_dir, tiny_folder


def _source(name: str, registry: Any, **fields: Any):
    config = ModelConfig(name_or_path=name, arch=fields.pop("arch", "sd15"), **fields)
    return resolve_source(config, registry.arch(config.arch))


def test_folder_without_model_index_is_refused(tmp_path: Path, registry: Any) -> None:
    with pytest.raises(EaselError, match="model_index.json"):
        _source(str(tmp_path), registry)


def test_unknown_checkpoint_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(EaselError, match="unknown checkpoint type"):
        checkpoint_file(path, allow_pickle=True)


def test_pickle_is_converted_once_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"a.weight": torch.arange(4.0)}, "epoch": 3}, path)
    with pytest.raises(EaselError, match="allow_pickle: true"):
        checkpoint_file(path, allow_pickle=False)
    converted = checkpoint_file(path, allow_pickle=True)
    assert converted.suffix == ".safetensors" and converted.parent == cache_dir("converted")
    from safetensors.torch import load_file

    assert list(load_file(converted)) == ["a.weight"] and torch.equal(load_file(converted)["a.weight"], torch.arange(4.0))
    stamp = converted.stat().st_mtime_ns
    assert checkpoint_file(path, allow_pickle=True) == converted and converted.stat().st_mtime_ns == stamp


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Path("/")}, path)
    with pytest.raises(EaselError, match="weights_only=True"):
        read_pickle_state_dict(path)


def test_tiny_name_must_match_arch(registry: Any) -> None:
    with pytest.raises(EaselError, match="use 'tiny:zimage'"):
        _source("tiny:sd15", registry, arch="zimage:turbo")


def test_tiny_folder_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_CACHE_DIR", str(tmp_path))
    calls = []

    def build(folder: Path, seed: int) -> None:
        calls.append(seed)
        (folder / "model_index.json").write_text("{}")

    first = tiny_folder("thing", build)
    assert tiny_folder("thing", build) == first == tmp_path / ".tiny" / "thing" and len(calls) == 1
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]  # no temp folders left
    marker = first / "easel_tiny.json"
    marker.write_text(marker.read_text().replace('"source": "', '"source": "old'))
    assert tiny_folder("thing", build) == first and len(calls) == 2, "a changed builder source rebuilds the cache"


def test_failed_tiny_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_CACHE_DIR", str(tmp_path))

    def broken(folder: Path, seed: int) -> None:
        (folder / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        tiny_folder("thing", broken)
    assert [p.name for p in (tmp_path / ".tiny").iterdir()] == [".thing.lock"]  # only the (empty) lock file


def test_separate_vae_from_folder(registry: Any) -> None:
    base = load_adapter(ModelConfig(name_or_path="tiny:sdxl", arch="sdxl"), registry, device="cpu")
    sd15_vae = cache_dir("tiny") / "sd15" / "vae"
    load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu")
    swapped = load_adapter(ModelConfig(name_or_path="tiny:sdxl", arch="sdxl", vae_path=str(sd15_vae)), registry, device="cpu")
    assert Path(swapped.vae.config._name_or_path) == sd15_vae != Path(base.vae.config._name_or_path)
    assert swapped.pipeline().vae is swapped.vae


def test_dtype_and_device(registry: Any) -> None:
    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage", dtype="bf16"), registry)
    assert adapter.dtype == torch.bfloat16 and adapter.denoiser.dtype == torch.bfloat16
    assert adapter.device.type in ("cpu", "cuda", "mps")


def test_unknown_model_kwargs_are_errors(registry: Any) -> None:
    config = ModelConfig(name_or_path="tiny:zimage", arch="zimage", model_kwargs={"flow_shfit": 2.0})
    with pytest.raises(EaselError, match="unknown key.*flow_shfit.*did you mean 'flow_shift'"):
        load_adapter(config, registry, device="cpu")


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_separate_vae_from_single_file(registry: Any, tmp_path: Path, prefix: str) -> None:
    """A standalone VAE checkpoint in the original layout (like sdxl-vae-fp16-fix's .safetensors) replaces the model's VAE."""
    from safetensors.torch import save_file

    from families.unet.ldm import vae_to_ldm

    base = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu")
    generator = torch.Generator().manual_seed(6)
    fixed = {key: value + 0.01 * torch.randn(value.shape, generator=generator) for key, value in base.vae.state_dict().items()}
    file = tmp_path / "vae-fix.safetensors"
    ldm = vae_to_ldm(fixed, len(base.vae.config.block_out_channels), prefix=prefix)
    save_file({key: value.contiguous() for key, value in ldm.items()}, str(file))
    swapped = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15", vae_path=str(file)), registry, device="cpu")
    got = swapped.vae.state_dict()
    assert set(got) == set(fixed) and all(torch.allclose(got[key], fixed[key]) for key in fixed)
    assert swapped.pipeline().vae is swapped.vae and torch.equal(swapped.denoiser.conv_in.weight, base.denoiser.conv_in.weight)


def test_cache_identity_follows_precision_and_text_encoder_quantization(registry: Any) -> None:
    def ids(**fields: Any) -> tuple[str, str]:
        adapter = load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15", **fields), registry, device="cpu")
        return adapter.identity("vae"), adapter.identity("text_encoder")

    fp32, bf16 = ids(dtype="fp32"), ids(dtype="bf16")
    quantized = ids(dtype="fp32", quantize_te=True, qtype_te="qint8")
    assert fp32 == ids(dtype="fp32")  # stable across loads, so warm caches are found
    assert fp32[0] != bf16[0] and fp32[1] != bf16[1]
    assert quantized[0] == fp32[0] and quantized[1] != fp32[1]
