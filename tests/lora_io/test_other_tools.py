"""Every LoRA file users already have loads, and gives diffusers' image where diffusers loads it: files made by
diffusers' example trainers, peft and LyCORIS themselves, and files written from the key lists of kohya
sd-scripts, ai-toolkit, OneTrainer, SimpleTuner and Civitai uploads. A layout nothing fits is a clear error
that lists the keys, also in the generate job."""

from __future__ import annotations

import pytest
import torch

from toolkit.errors import EaselError
from toolkit.lora_io import apply_loras, remove_loras
from toolkit.lora_io.files import LoraFile

from tests.lora_io.helpers import image, load_lora, max_diff, save_lora
from tests.lora_io.other_tools import diffusers_trainer_file, lycoris_file, peft_folder, written_file

SD15_UNET = [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),
    ("lora_unet_down_blocks_1_attentions_1_proj_in", "unet", "down_blocks.1.attentions.1.proj_in"),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2", "unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2"),
    ("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_out_0", "unet", "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0"),
]
SD15_TE = [
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", "text_encoder", "text_model.encoder.layers.0.self_attn.q_proj"),
    ("lora_te_text_model_encoder_layers_1_mlp_fc1", "text_encoder", "text_model.encoder.layers.1.mlp.fc1"),
]
"""(diffusers 0.42 misapplies kohya text-encoder keys that do not cover every layer (a lone q_proj fails to load, layer 0
q_proj with layer 1 fc1 changes the output by 0.3), so text encoders are checked against the LoRA arithmetic instead.)"""
KOHYA_SD15 = SD15_UNET + SD15_TE + [("lora_unet_down_blocks_0_resnets_1_conv1", "unet", "down_blocks.0.resnets.1.conv1")]
"""kohya sd-scripts / Civitai SD 1.5 LoRA (LoCon on a resnet conv): flattened diffusers names, lora_te_ text encoder."""
KOHYA_SDXL = [
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
    ("lora_unet_input_blocks_8_1_transformer_blocks_1_attn2_to_k", "unet", "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k"),
    ("lora_unet_middle_block_1_proj_out", "unet", "mid_block.attentions.0.proj_out"),
    ("lora_unet_output_blocks_2_1_transformer_blocks_0_ff_net_0_proj", "unet", "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.0.proj"),
    ("lora_unet_output_blocks_5_1_proj_in", "unet", "up_blocks.1.attentions.2.proj_in"),
    ("lora_unet_input_blocks_1_0_in_layers_2", "unet", "down_blocks.0.resnets.0.conv1"),
    ("lora_te1_text_model_encoder_layers_0_self_attn_k_proj", "text_encoder", "text_model.encoder.layers.0.self_attn.k_proj"),
    ("lora_te2_text_model_encoder_layers_1_mlp_fc2", "text_encoder_2", "text_model.encoder.layers.1.mlp.fc2"),
]
"""kohya sd-scripts SDXL LoRA: SGM UNet names, lora_te1_ / lora_te2_."""
FLAT_SDXL = [
    ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
    ("lora_unet_up_blocks_0_attentions_1_transformer_blocks_1_attn2_to_v", "unet", "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v"),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2", "unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2"),
    ("lora_te1_text_model_encoder_layers_0_self_attn_out_proj", "text_encoder", "text_model.encoder.layers.0.self_attn.out_proj"),
    ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", "text_encoder_2", "text_model.encoder.layers.0.self_attn.q_proj"),
]
"""ai-toolkit's and OneTrainer's SDXL LoRA: kohya prefixes on flattened diffusers names (no SGM renaming)."""
ZIMAGE = [("layers.0.attention.to_q", "layers.0.attention.to_q"), ("layers.1.feed_forward.w2", "layers.1.feed_forward.w2"),
          ("layers.1.attention.to_out.0", "layers.1.attention.to_out.0")]
AITK_ZIMAGE = [(f"diffusion_model.{key}", "transformer", path) for key, path in ZIMAGE]
"""ai-toolkit's Z-Image LoRA: ``diffusion_model.`` + module, lora_A / lora_B, no alpha (alpha = rank)."""
ONETRAINER_ZIMAGE = [("lora_transformer_layers_0_attention_to_k", "transformer", "layers.0.attention.to_k"),
                     ("lora_transformer_noise_refiner_0_feed_forward_w1", "transformer", "noise_refiner.0.feed_forward.w1")]
"""OneTrainer's Z-Image LoRA: ``lora_transformer_`` + flattened module names."""
SIMPLETUNER_ZIMAGE = [(f"transformer.{key}", "transformer", path) for key, path in ZIMAGE]
"""SimpleTuner's Z-Image LoRA (diffusers' save_lora_weights of the peft state): ``transformer.`` + module, lora_A / lora_B."""

WRITTEN = {
    "kohya_sd15": ("sd15", KOHYA_SD15, "kohya", True),
    "kohya_sdxl": ("sdxl", KOHYA_SDXL, "kohya", True),
    "aitoolkit_sdxl": ("sdxl", FLAT_SDXL, "kohya", True),
    "aitoolkit_zimage": ("zimage", AITK_ZIMAGE, "peft", True),
    "onetrainer_zimage": ("zimage", ONETRAINER_ZIMAGE, "kohya", False),
    "simpletuner_zimage": ("zimage", SIMPLETUNER_ZIMAGE, "peft", True),
}
"""name -> (arch, key list, tensor style, whether diffusers' load_lora_weights reads it)."""


def _easel_image(adapter, source, weight: float = 1.0):
    apply_loras(adapter, [(source, weight)])
    try:
        return image(adapter)
    finally:
        remove_loras(adapter)


def _diffusers_image(new_adapter, arch: str, path):
    fresh = new_adapter(arch)
    fresh.pipeline().load_lora_weights(str(path))
    return image(fresh)


def _layer_outputs(adapter, entries, inputs):
    from tests.lora_io.other_tools import layer_of

    with torch.no_grad():
        return [layer_of(adapter.components(), component, path)(x) for (_, component, path), x in zip(entries, inputs)]


def _assert_layers_follow_the_arithmetic(adapter, path, entries, style):
    """Each named layer's output with the LoRA on is the base layer's with W + alpha/rank * up @ down."""
    from safetensors.torch import load_file

    from tests.lora_io.other_tools import layer_of

    weights = load_file(str(path))
    layers = [layer_of(adapter.components(), component, module) for _, component, module in entries]
    inputs = [torch.randn(2, layer.in_features) if isinstance(layer, torch.nn.Linear) else torch.randn(1, layer.in_channels, 6, 6)
              for layer in layers]
    down_key, up_key = ("lora_A.weight", "lora_B.weight") if style == "peft" else ("lora_down.weight", "lora_up.weight")
    expected = []
    with torch.no_grad():
        for (key, _, _), layer, x in zip(entries, layers, inputs):
            down, up = weights[f"{key}.{down_key}"], weights[f"{key}.{up_key}"]
            scale = float(weights[f"{key}.alpha"]) / down.shape[0] if f"{key}.alpha" in weights else 1.0
            delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:]) * scale
            if isinstance(layer, torch.nn.Linear):
                expected.append(torch.nn.functional.linear(x, layer.weight + delta, layer.bias))
            else:
                expected.append(layer._conv_forward(x, layer.weight + delta, layer.bias))
    apply_loras(adapter, [(path, 1.0)])
    try:
        ours = _layer_outputs(adapter, entries, inputs)
    finally:
        remove_loras(adapter)
    for (key, _, _), a, b in zip(entries, ours, expected):
        assert torch.allclose(a, b, atol=1e-5), key


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_written_out_layout_loads_exactly_and_matches_diffusers(name, adapters, new_adapter, tmp_path):
    """Every module lands on its layer with the LoRA arithmetic; diffusers gives the same image from the denoiser's
    keys (its text-encoder readers misapply some kohya key mixes, see SD15_TE)."""
    arch, entries, style, diffusers_reads = WRITTEN[name]
    adapter = adapters[arch]
    path = written_file(tmp_path / f"{name}.safetensors", adapter.components(), entries, style)
    lora = load_lora(path, adapter=adapter)
    assert len(lora.modules) == len(entries)
    assert {m.component for m in lora.modules.values()} == {component for _, component, _ in entries}
    assert load_lora(path).arch == arch, "the architecture is recognised from the keys"
    _assert_layers_follow_the_arithmetic(adapter, path, entries, style)
    denoiser = [entry for entry in entries if entry[1] == adapter.denoiser_name]
    path = written_file(tmp_path / f"{name}_denoiser.safetensors", adapter.components(), denoiser, style)
    ours = _easel_image(adapter, path)
    assert max_diff(ours, image(adapter)) > 1.0, "the LoRA should change the image"
    if diffusers_reads:
        assert max_diff(_diffusers_image(new_adapter, arch, path), ours) <= 1.0


@pytest.mark.parametrize("arch,targets", [
    ("sd15", {"unet": ["to_k", "to_q", "to_v", "to_out.0"]}),
    ("sdxl", {"unet": ["to_k", "to_q", "to_v", "to_out.0"], "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"],
              "text_encoder_2": ["q_proj", "k_proj", "v_proj", "out_proj"]}),
])
def test_diffusers_example_trainer_lora_matches_diffusers(arch, targets, adapters, new_adapter, tmp_path):
    """``unet.<module>.lora.down.weight`` (convert_state_dict_to_diffusers) failed with "Could not automatically infer
    state dict type"."""
    adapter = adapters[arch]
    path = diffusers_trainer_file(adapter.pipeline(), tmp_path, targets, seed=4)
    lora = load_lora(path, adapter=adapter)
    assert lora.format == "diffusers-old" and {m.component for m in lora.modules.values()} == set(targets)
    ours = _easel_image(adapter, lora)
    assert max_diff(ours, image(adapter)) > 1.0
    assert max_diff(_diffusers_image(new_adapter, arch, path), ours) <= 1.0


def test_diffusers_example_trainer_lora_in_the_generate_job(adapters, tmp_path, capsys):
    import run
    from toolkit.output import dump_yaml

    path = diffusers_trainer_file(adapters["sd15"].pipeline(), tmp_path, {"unet": ["to_k", "to_q"]})
    config = tmp_path / "gen.yaml"
    config.write_text(dump_yaml({"job": "generate", "config": {"name": "g", "process": [{
        "type": "to_folder", "output_folder": str(tmp_path / "out"), "device": "cpu",
        "model": {"name_or_path": "tiny:sd15", "arch": "sd15"},
        "generate": {"prompts": ["a cat"], "width": 32, "height": 32, "sample_steps": 2, "seed": 1,
                     "loras": [{"path": str(path), "weight": 0.8}]}}]}}))
    assert run.main([str(config)]) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_peft_save_pretrained_folder_gives_peft_output(adapters, tmp_path):
    """The folder peft writes (adapter_model.safetensors; r and lora_alpha in adapter_config.json) loads with its alpha."""
    adapter = adapters["sd15"]
    peft_model = peft_folder(adapter.denoiser, tmp_path / "peft", ["to_q", "to_v", "proj_in"], alpha=8.0, seed=2)
    lora = load_lora(tmp_path / "peft", adapter=adapter)
    assert lora.format == "peft" and {m.alpha for m in lora.modules.values()} == {8.0}
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, adapter.denoiser.config.cross_attention_dim)
    with torch.no_grad():
        theirs = peft_model(sample, 500, encoder_hidden_states=context).sample
        apply_loras(adapter, [(tmp_path / "peft", 1.0)])
        try:
            ours = adapter.denoiser(sample, 500, encoder_hidden_states=context).sample
        finally:
            remove_loras(adapter)
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("algo", ["lora", "lokr"])
def test_lycoris_saved_file_gives_lycoris_output(algo, adapters, tmp_path):
    from lycoris import create_lycoris_from_weights
    from safetensors.torch import load_file

    adapter = adapters["sd15"]
    path = tmp_path / f"{algo}.safetensors"
    lycoris_file(adapter.denoiser, path, algo, seed=6)
    lora = load_lora(path, adapter=adapter)
    assert lora.format == "lycoris" and {m.kind for m in lora.modules.values()} == {"lora" if algo == "lora" else "lokr"}
    import copy

    unet = copy.deepcopy(adapter.denoiser)
    network, _ = create_lycoris_from_weights(1.0, None, unet, weights_sd=load_file(str(path)))
    network.apply_to()
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        theirs = unet(sample, 500, encoder_hidden_states=context).sample
        apply_loras(adapter, [(lora, 1.0)])
        try:
            ours = adapter.denoiser(sample, 500, encoder_hidden_states=context).sample
        finally:
            remove_loras(adapter)
    assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("style", ["hada", "lokr"])
def test_civitai_loha_and_lokr_files_give_lycoris_output(style, adapters, tmp_path):
    """kohya-named LoHa (``hada_w1_a`` ...) and LoKr (``lokr_w1`` ...) files, as Civitai serves them, on the UNet and
    the text encoder (LoKr on linear layers); compared with LyCORIS' own modules built from the same tensors."""
    import copy

    from lycoris.modules import get_module, make_module
    from safetensors.torch import load_file

    adapter = adapters["sd15"]
    entries = SD15_UNET[:2] + SD15_TE[:1] if style == "hada" else [SD15_UNET[0], SD15_UNET[2], SD15_TE[0]]
    path = written_file(tmp_path / f"{style}.safetensors", adapter.components(), entries, style, seed=8)
    lora = load_lora(path, adapter=adapter)
    assert {m.kind for m in lora.modules.values()} == {"loha" if style == "hada" else "lokr"}
    weights = load_file(str(path))
    components = {name: copy.deepcopy(module) for name, module in adapter.components().items()}
    for key, component, module_path in entries:
        layer = components[component].get_submodule(module_path.removeprefix("text_model.") if component != "unet" and not
                                                     hasattr(components[component], "text_model") else module_path)
        made = make_module(*get_module(weights, key), key, layer)
        made.apply_to()
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, adapter.denoiser.config.cross_attention_dim)
    tokens = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        theirs = (components["unet"](sample, 500, encoder_hidden_states=context).sample,
                  components["text_encoder"](tokens)[0])
        apply_loras(adapter, [(lora, 1.0)])
        try:
            ours = (adapter.denoiser(sample, 500, encoder_hidden_states=context).sample, adapter.components()["text_encoder"](tokens)[0])
        finally:
            remove_loras(adapter)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ours, theirs))


def _tiny_sdxl_with_one_layer_per_block(folder):
    """An SDXL-family pipeline whose UNet has one layer per block instead of SDXL base's two."""
    from diffusers import UNet2DConditionModel

    from extensions.sdxl.tiny import pipeline

    pipe = pipeline(seed=3)
    torch.manual_seed(3)
    pipe.unet = UNet2DConditionModel.from_config({**pipe.unet.config, "layers_per_block": 1}).eval()
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("fmt", ["kohya", "comfy"])
def test_sgm_names_follow_the_unets_layout_and_load_back(fmt, new_adapter, registry, tmp_path):
    """An SDXL-family UNet laid out unlike SDXL base: the saved SGM names are its own (diffusers maps them back to
    the same layers), and files written with SDXL base's numbering (easel's before) still load."""
    from toolkit.config.blocks import ModelConfig
    from toolkit.models.loading import load_adapter

    from tests.lora_io.helpers import random_lora

    folder = _tiny_sdxl_with_one_layer_per_block(tmp_path / "small_xl")

    def small():
        return load_adapter(ModelConfig(name_or_path=str(folder), arch="sdxl"), registry, device="cpu", dtype="fp32")

    adapter = small()
    state = random_lora(adapter.components(), {"unet": ["to_q", "proj_in", "conv1", "downsamplers.0.conv", "upsamplers.0.conv"]})
    path = save_lora(state, tmp_path / "own.safetensors", arch="sdxl", format=fmt, adapter=adapter)
    assert LoraFile.from_state_dict(state).state_dict().keys() == load_lora(path, adapter=adapter).state_dict().keys()
    ours = _easel_image(adapter, path)
    if fmt == "kohya":
        fresh = small()
        fresh.pipeline().load_lora_weights(str(path))
        assert max_diff(image(fresh), ours) <= 1.0
    old = save_lora(state, tmp_path / "old.safetensors", arch="sdxl", format=fmt)
    assert load_lora(old, adapter=adapter).state_dict().keys() == load_lora(path, adapter=adapter).state_dict().keys()
    assert max_diff(_easel_image(adapter, old), ours) == 0


@pytest.mark.parametrize("keys", [
    ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in.weight"],
    ["lora_unet_no_such_block_to_q.lora_down.weight", "lora_unet_no_such_block_to_q.lora_up.weight"],
    ["unet.down_blocks.0.attentions.0.mystery.weight"],
])
def test_unknown_layout_is_a_clear_error_listing_the_keys(keys, adapters, tmp_path, capsys):
    import run
    from safetensors.torch import save_file

    from toolkit.output import dump_yaml

    path = tmp_path / "odd.safetensors"
    save_file({key: torch.zeros(2, 2) for key in keys}, str(path))
    with pytest.raises(EaselError) as err:
        load_lora(path, adapter=adapters["sd15"])
    assert keys[0].partition(".")[0].removeprefix("lora_unet_")[:8] in str(err.value)
    config = tmp_path / "gen.yaml"
    config.write_text(dump_yaml({"job": "generate", "config": {"name": "g", "process": [{
        "type": "to_folder", "output_folder": str(tmp_path / "out"), "device": "cpu",
        "model": {"name_or_path": "tiny:sd15", "arch": "sd15"},
        "generate": {"prompts": ["a cat"], "width": 32, "height": 32, "sample_steps": 1, "loras": [{"path": str(path)}]}}]}}))
    assert run.main([str(config)]) == 2
    err_text = capsys.readouterr().err
    assert "unexpected" not in err_text and "odd.safetensors" in err_text
