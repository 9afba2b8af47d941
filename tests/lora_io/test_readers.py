"""Files written by other tools load into the same canonical LoRA: OneTrainer, LyCORIS, older diffusers,
PEFT, ai-toolkit, and layouts only diffusers' own converters know (fused Z-Image qkv)."""

import pytest
import torch
from safetensors.torch import save_file

from toolkit.lora_io import apply_loras, remove_loras
from toolkit.lora_io.files import LoraFile
from tests.lora_io.helpers import load_lora
from toolkit.lora_io.formats import write_comfy, write_diffusers, write_kohya
from toolkit.lora_io.keys import group_modules
from toolkit.lora_io.namer import Namer

from tests.lora_io.helpers import random_lora

from tests.conftest import ROOT
from toolkit.registry import Registry

SPECS = {spec.name: spec for spec in Registry.discover(("jobs",), ROOT / "extensions").archs.values()}


def _save(tensors: dict, path) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def _same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:6]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


def test_onetrainer_transformer_prefix(adapters, tmp_path):
    adapter = adapters["zimage"]
    state = random_lora(adapter.components(), {"transformer": ["attention.to_q", "feed_forward.w1"]})
    kohya = write_kohya(group_modules(state), Namer.of(SPECS["zimage"]))
    _save({k.replace("lora_unet_", "lora_transformer_"): v for k, v in kohya.items()}, tmp_path / "ot.safetensors")
    lora = load_lora(tmp_path / "ot.safetensors")
    assert (lora.format, lora.arch) == ("onetrainer", "zimage")
    _same(lora.state_dict(), state)


def test_lycoris_native_file_matches_lycoris_forward(adapters, tmp_path):
    """A LoHa file written by lycoris itself (``lycoris_`` keys) gives lycoris' own layer output."""
    import copy

    from lycoris import create_lycoris, create_lycoris_from_weights

    adapter = adapters["sd15"]
    unet = copy.deepcopy(adapter.denoiser)
    network = create_lycoris(unet, 1.0, linear_dim=4, linear_alpha=2.0, algo="loha")
    network.apply_to()
    state = {k: (torch.randn_like(v) * 0.3 if "alpha" not in k else v) for k, v in network.state_dict().items()}
    network.restore()
    _save(state, tmp_path / "lyco.safetensors")
    lora = load_lora(tmp_path / "lyco.safetensors", adapter=adapter)
    assert lora.format == "lycoris" and {m.kind for m in lora.modules.values()} == {"loha"}
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    x = torch.randn(2, unet.get_submodule(name).in_features)
    theirs, _ = create_lycoris_from_weights(0.6, None, unet, weights_sd=state)
    theirs.apply_to()
    expected = unet.get_submodule(name)(x)
    apply_loras(adapter, [(lora, 0.6)])
    try:
        assert torch.allclose(adapter.denoiser.get_submodule(name)(x), expected, atol=1e-5)
    finally:
        remove_loras(adapter)


def test_older_diffusers_layout_converted_by_diffusers(adapters, tmp_path):
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    adapter = adapters["sd15"]
    state = random_lora(adapter.components(), adapter.lora_targets(True), alpha=4.0, rank=4)
    kohya = write_kohya(group_modules(state), Namer.of(SPECS["sd15"]))
    old, _ = _convert_non_diffusers_lora_to_diffusers(dict(kohya))
    assert any(".processor." in k for k in old)
    _save(old, tmp_path / "old.safetensors")
    lora = load_lora(tmp_path / "old.safetensors", adapter=adapter)
    assert lora.format == "diffusers-old"
    _same(lora.state_dict(), state)


def test_peft_and_ai_toolkit_layouts(adapters, tmp_path):
    adapter = adapters["zimage"]
    state = random_lora(adapter.components(), {"transformer": ["attention.to_k"]}, alpha=4.0, rank=4)
    modules = group_modules(state)
    peft_tensors, _ = write_diffusers(modules)
    _save({k.replace("transformer.", "base_model.model.", 1): v for k, v in peft_tensors.items()}, tmp_path / "peft.safetensors")
    assert load_lora(tmp_path / "peft.safetensors", arch="zimage").format == "peft"
    _same(load_lora(tmp_path / "peft.safetensors", arch="zimage").state_dict(), state)
    comfy = {k: v for k, v in write_comfy(modules, Namer.of(SPECS["zimage"])).items() if not k.endswith(".alpha")}
    _save(comfy, tmp_path / "aitk.safetensors")
    _same(load_lora(tmp_path / "aitk.safetensors").state_dict(), state)


def test_fused_qkv_layout_is_read_by_diffusers_converter(adapters, tmp_path):
    """Z-Image LoRAs on the original fused ``qkv`` layer: easel's readers defer to diffusers' Z-Image converter."""
    adapter = adapters["zimage"]
    dim = adapter.denoiser.get_submodule("layers.0.attention.to_q").in_features
    down, up = torch.randn(2, dim), torch.randn(3 * dim, 2)
    _save({"diffusion_model.layers.0.attention.qkv.lora.down.weight": down,
           "diffusion_model.layers.0.attention.qkv.lora.up.weight": up,
           "diffusion_model.layers.0.attention.qkv.alpha": torch.tensor(2.0)}, tmp_path / "qkv.safetensors")
    lora = load_lora(tmp_path / "qkv.safetensors", adapter=adapter)
    assert "via diffusers" in lora.format
    assert sorted(lora.modules) == [f"transformer.layers.0.attention.to_{p}" for p in "kqv"]
    for index, part in enumerate("qkv"):
        module = lora.modules[f"transformer.layers.0.attention.to_{part}"]
        delta = module.tensors["lora_B.weight"] @ module.tensors["lora_A.weight"] * module.scale
        assert torch.allclose(delta, (up @ down)[index * dim:(index + 1) * dim], atol=1e-5)


@pytest.mark.parametrize("arch", ["sd15", "zimage"])
def test_lora_file_object_round_trip(arch, adapters):
    adapter = adapters[arch]
    state = random_lora(adapter.components(), adapter.lora_targets(False), rank=2)
    _same(LoraFile.from_state_dict(state, arch).state_dict(), state)
