"""Canonical -> every format -> load -> canonical is lossless, for every network type; headers and hashes."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from toolkit.errors import EaselError
from tests.lora_io.helpers import load_lora, save_lora
from toolkit.lora_io.formats import FORMATS

from tests.lora_io.conftest import ARCHS
from tests.lora_io.helpers import random_lora

KINDS = ("lora", "locon", "loha", "lokr", "dora")


def _targets(adapter, kind: str) -> dict[str, list[str]]:
    targets = adapter.lora_targets(train_text_encoder=True)
    if kind == "locon" and adapter.denoiser_name == "unet":
        targets[adapter.denoiser_name] += ["conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"]
    return targets


def canonical(adapter, kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random canonical LoRA of ``kind`` for the adapter (LoCon: also the UNet's 3x3 convolutions)."""
    base = "lora" if kind in ("locon", "dora") else kind
    return random_lora(adapter.components(), _targets(adapter, kind), kind=base, rank=4, seed=seed, dora=kind == "dora")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:6]
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key].float(), b[key].float()), key


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_every_format_is_lossless(arch, kind, adapters, tmp_path, registry):
    adapter = adapters[arch]
    state = canonical(adapter, kind)
    for fmt in FORMATS:
        path = save_lora(state, tmp_path / f"{fmt}.safetensors", arch=arch, format=fmt)
        alone = load_lora(path, registry=registry)
        assert alone.arch == arch and alone.format in (fmt, "diffusers")
        _same(state, alone.state_dict())
        _same(state, load_lora(path, adapter=adapter).state_dict())


def test_default_formats_and_dtype(adapters, tmp_path):
    for arch, expected in (("sd15", "kohya"), ("sdxl", "kohya"), ("zimage", "comfy")):
        path = save_lora(canonical(adapters[arch], "lora"), tmp_path / f"{arch}.safetensors", arch=arch, dtype="fp16")
        lora = load_lora(path)
        assert lora.format == expected
        assert {t.dtype for m in lora.modules.values() for t in m.tensors.values()} == {torch.float16}


def test_kohya_header_has_what_a1111_reads(adapters, tmp_path):
    state = canonical(adapters["sdxl"], "lora")
    meta = {"name": "springwc", "trigger_word": "<springwc>", "steps": 3000, "resolution": 1024, "num_train_images": 12,
            "tag_frequency": {"5_springwc": {"<springwc>": 12, "watercolor": 7}}, "prediction_type": "epsilon",
            "base_model": "stabilityai/stable-diffusion-xl-base-1.0", "network_type": "lora", "config": {"a": 1}}
    path = save_lora(state, tmp_path / "x.safetensors", arch="sdxl", metadata=meta)
    with safe_open(str(path), "pt") as handle:
        header = handle.metadata()
    assert header["ss_base_model_version"] == "sdxl_base_v1-0"
    assert header["ss_output_name"] == "springwc" and header["modelspec.title"] == "springwc"
    assert header["ss_network_module"] == "networks.lora"
    assert (header["ss_network_dim"], header["ss_network_alpha"]) == ("4", "2")
    assert header["ss_resolution"] == "(1024, 1024)" and header["modelspec.resolution"] == "1024x1024"
    assert header["ss_num_train_images"] == "12" and header["ss_steps"] == "3000"
    assert json.loads(header["ss_tag_frequency"]) == meta["tag_frequency"]
    assert header["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert header["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert header["modelspec.trigger_phrase"] == "<springwc>" and header["modelspec.prediction_type"] == "epsilon"
    assert header["modelspec.sai_model_spec"] == "1.0.0" and header["modelspec.date"]
    assert json.loads(header["easel.config"]) == {"a": 1}
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    assert header["sshs_model_hash"] == hashlib.sha256(data[start:]).hexdigest()
    assert header["sshs_legacy_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_lycoris_header_names_algorithm(adapters, tmp_path):
    path = save_lora(canonical(adapters["sd15"], "loha"), tmp_path / "x.safetensors", arch="sd15")
    with safe_open(str(path), "pt") as handle:
        header = handle.metadata()
    assert header["ss_network_module"] == "lycoris.kohya"
    assert json.loads(header["ss_network_args"])["algo"] == "loha"


def test_unknown_keys_are_reported_not_dropped(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 2),
               "lora_unet_down_blocks_0_attentions_0_proj_in.hypernet": torch.zeros(2)}, str(path))
    with pytest.raises(EaselError, match="hypernet"):
        load_lora(path, arch="sd15")


def test_keys_that_match_no_module_are_an_error(adapters, tmp_path):
    state = canonical(adapters["sd15"], "lora")
    state["unet.down_blocks.0.attentions.0.transformer_blocks.7.attn1.to_q.lora_A.weight"] = torch.zeros(4, 8)
    state["unet.down_blocks.0.attentions.0.transformer_blocks.7.attn1.to_q.lora_B.weight"] = torch.zeros(8, 4)
    path = save_lora(state, tmp_path / "x.safetensors", arch="sd15")
    with pytest.raises(EaselError, match="transformer_blocks_7_attn1_to_q"):
        load_lora(path, adapter=adapters["sd15"])
