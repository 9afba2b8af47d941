"""Proof against real clients: files easel writes load in diffusers (``load_lora_weights``) and give the
image easel gives with the same LoRA; kohya files follow the names A1111's and ComfyUI's loaders match;
a kohya file written by diffusers' own converter loads in easel."""

import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from toolkit.lora_io import apply_loras, remove_loras
from toolkit.lora_io.files import LoraFile
from tests.lora_io.helpers import load_lora, save_lora
from toolkit.lora_io.formats import write_diffusers
from toolkit.lora_io.keys import group_modules
from toolkit.lora_io.naming import flatten

from tests.lora_io.conftest import ARCHS
from tests.lora_io.helpers import image, max_diff, random_lora

KOHYA_KEY = re.compile(r"^lora_(unet|te|te1|te2)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")
CLIP_LAYERS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj", "self_attn_out_proj")


def _targets(adapter) -> dict[str, list[str]]:
    """Default targets; text encoders too where diffusers' loader reads them (not for Z-Image)."""
    return adapter.lora_targets(train_text_encoder=adapter.denoiser_name == "unet")


def _easel_image(adapter, lora: LoraFile, weight: float = 1.0):
    apply_loras(adapter, [(lora, weight)])
    try:
        return image(adapter)
    finally:
        remove_loras(adapter)


def _diffusers_image(new_adapter, arch: str, path):
    fresh = new_adapter(arch)
    fresh.pipeline().load_lora_weights(str(path))
    return image(fresh)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmt", ["default", "diffusers"])
def test_saved_file_gives_the_same_image_in_diffusers(arch, fmt, adapters, new_adapter, tmp_path):
    adapter = adapters[arch]
    state = random_lora(adapter.components(), _targets(adapter), seed=1)
    base = image(adapter)
    ours = _easel_image(adapter, LoraFile.from_state_dict(state, arch))
    assert max_diff(ours, base) > 8, "the LoRA should visibly change the image"
    assert max_diff(image(adapter), base) == 0, "remove_loras restores the model"
    assert not any(type(m).__module__.startswith("peft") for m in adapter.denoiser.modules())
    assert not hasattr(adapter.denoiser, "peft_config")
    path = save_lora(state, tmp_path / "lora.safetensors", arch=arch, format=None if fmt == "default" else fmt)
    assert max_diff(_diffusers_image(new_adapter, arch, path), ours) <= 1.0


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_kohya_keys_follow_the_a1111_comfyui_naming(arch, adapters, tmp_path):
    from families.unet.ldm import unet_to_ldm

    adapter = adapters[arch]
    targets = adapter.lora_targets(train_text_encoder=True)
    targets["unet"] += ["conv1", "conv2", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv"]
    state = random_lora(adapter.components(), targets)
    path = save_lora(state, tmp_path / "k.safetensors", arch=arch, format="kohya")
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert all(KOHYA_KEY.match(k) for k in keys), [k for k in keys if not KOHYA_KEY.match(k)][:5]
    modules: dict[str, set[str]] = {}
    for key in keys:
        name, _, tensor = key.partition(".")
        modules.setdefault(name, set()).add(tensor)
    assert all(t == {"lora_down.weight", "lora_up.weight", "alpha"} for t in modules.values())
    assert len(modules) == len(group_modules(state))
    unet = adapter.denoiser
    if arch == "sdxl":
        known = {"lora_unet_" + flatten(k.rpartition(".")[0]) for k in unet_to_ldm(unet.state_dict(), unet.config, prefix="")}
        te_prefixes = ("lora_te1_", "lora_te2_")
    else:
        known = {"lora_unet_" + flatten(n) for n, _ in unet.named_modules()}
        te_prefixes = ("lora_te_",)
    unet_names = [n for n in modules if n.startswith("lora_unet_")]
    assert unet_names and set(unet_names) <= known, sorted(set(unet_names) - known)[:5]
    if arch == "sdxl":
        assert not any("down_blocks" in n or "up_blocks" in n for n in unet_names), "SDXL UNet names must be SGM names"
    clip = {f"{prefix}text_model_encoder_layers_{b}_{c}" for prefix in te_prefixes for b in range(2) for c in CLIP_LAYERS}
    te_names = [n for n in modules if not n.startswith("lora_unet_")]
    assert te_names and set(te_names) <= clip, sorted(set(te_names) - clip)[:5]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_kohya_file_from_diffusers_converter_loads_in_easel(arch, adapters, new_adapter, tmp_path):
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    adapter = adapters[arch]
    state = random_lora(adapter.components(), adapter.lora_targets(train_text_encoder=True), rank=4, alpha=4.0, seed=3)
    ours = _easel_image(adapter, LoraFile.from_state_dict(state, arch))
    peft_state, _ = write_diffusers(group_modules(state))
    path = tmp_path / "from_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in convert_state_dict_to_kohya(peft_state).items()}, str(path))
    loaded = load_lora(path, adapter=adapter)
    assert loaded.format == "kohya" and len(loaded.modules) == len(group_modules(state))
    assert max_diff(_easel_image(adapter, loaded), ours) <= 1.0
    assert max_diff(_diffusers_image(new_adapter, arch, path), ours) <= 1.0


def test_diffusers_save_lora_weights_file_loads_in_easel(adapters, tmp_path):
    """A file written by diffusers' own ``save_lora_weights`` (PEFT config in the header) gives diffusers' image."""
    from toolkit.testing.tiny import save_random_lora

    adapter = adapters["sd15"]
    path = save_random_lora(adapter.pipeline(), tmp_path / "d.safetensors", adapter.lora_targets(True), rank=4, seed=5)
    lora = load_lora(path, adapter=adapter)
    assert lora.format == "diffusers"
    adapter.pipeline().load_lora_weights(str(path), adapter_name="reference")
    try:
        theirs = image(adapter)
    finally:
        adapter.pipeline().delete_adapters(["reference"])
    assert max_diff(_easel_image(adapter, lora), theirs) <= 1.0
    assert torch.is_tensor(next(iter(lora.modules.values())).tensors["alpha"])


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_kohya_lycoris_file_loads_in_lycoris_kohya_loader(kind, adapters, tmp_path):
    """LoHa/LoKr in kohya format: LyCORIS tensor suffixes, every module found by LyCORIS' own kohya loader
    (the name matching A1111's and ComfyUI's loaders share), and the UNet output easel gives."""
    import copy

    from lycoris.modules import get_module, make_module
    from safetensors.torch import load_file

    adapter = adapters["sd15"]
    state = random_lora(adapter.components(), {"unet": ["to_q", "to_out.0", "proj_in", "ff.net.2", "conv1"]},
                        kind=kind, rank=4, seed=9)
    path = save_lora(state, tmp_path / "l.safetensors", arch="sd15", format="kohya")
    weights = load_file(str(path))
    suffixes = {"loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
                "lokr": {"lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_w1_a", "lokr_w1_b", "alpha"}}[kind]
    assert {key.partition(".")[2] for key in weights} <= suffixes
    unet = copy.deepcopy(adapter.denoiser)
    # lycoris.kohya.create_network_from_weights' matching and module building (its network constructor trips on
    # current diffusers UNets, so the loop is spelled out): ``lora_unet_`` + the diffusers path with "." -> "_".
    found = {f"lora_unet_{name}".replace(".", "_"): layer for name, layer in unet.named_modules()}
    names = {key.partition(".")[0] for key in weights}
    assert names <= set(found), sorted(names - set(found))[:5]
    assert len(names) == len(group_modules(state))
    for name in names:
        module = make_module(*get_module(weights, name), name, found[name])
        assert module is not None and type(module).__name__ == {"loha": "LohaModule", "lokr": "LokrModule"}[kind]
        module.apply_to()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        theirs = unet(sample, 500, encoder_hidden_states=context).sample
        base = adapter.denoiser(sample, 500, encoder_hidden_states=context).sample
        apply_loras(adapter, [(path, 1.0)])
        try:
            ours = adapter.denoiser(sample, 500, encoder_hidden_states=context).sample
        finally:
            remove_loras(adapter)
    assert (ours - base).abs().max() > 1e-2
    assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_comfy_and_diffusers_key_layouts(arch, adapters, tmp_path):
    """``comfy``: ``diffusion_model.<module>`` + lora_A/lora_B/alpha, nothing else; ``diffusers``: ``<component>.<module>``
    + lora_A/lora_B only, each component's PEFT ``LoraConfig`` in the header (rank and alpha exact)."""
    import json

    from peft import LoraConfig

    adapter = adapters[arch]
    state = random_lora(adapter.components(), {adapter.denoiser_name: adapter.lora_targets(False)[adapter.denoiser_name]},
                        rank=4, alpha=3.0)
    names = {key.rsplit(".", 2)[0].partition(".")[2] for key in state if key.endswith(".lora_A.weight")}
    comfy = save_lora(state, tmp_path / "c.safetensors", arch=arch, format="comfy")
    with safe_open(str(comfy), "pt") as handle:
        keys = list(handle.keys())
    assert len(keys) == 3 * len(names)
    assert all(k.startswith("diffusion_model.") and k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha")) for k in keys)
    if arch == "zimage":
        assert {k.removeprefix("diffusion_model.").rsplit(".", 2)[0] for k in keys if k.endswith(".lora_A.weight")} == names
    else:
        assert not any("down_blocks" in k or "up_blocks" in k for k in keys), "ComfyUI names SD UNets the SGM way"
    peft_file = save_lora(state, tmp_path / "d.safetensors", arch=arch, format="diffusers")
    with safe_open(str(peft_file), "pt") as handle:
        keys, header = list(handle.keys()), handle.metadata()
    component = adapter.denoiser_name
    assert {k.removeprefix(component + ".").rsplit(".", 2)[0] for k in keys} == names
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys) and len(keys) == 2 * len(names)
    config = {k.partition(".")[2]: v for k, v in json.loads(header["lora_adapter_metadata"]).items() if k.startswith(component + ".")}
    config = LoraConfig(**config)
    assert (config.r, config.lora_alpha) == (4, 3.0) and set(config.target_modules) == names
