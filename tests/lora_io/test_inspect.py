"""Describing LoRA files: architecture guess, format, ranks, trigger words; files of unknown architecture."""

import pytest
import torch
from safetensors.torch import save_file

from toolkit.errors import EaselError
from tests.lora_io.helpers import load_lora, save_lora
from toolkit.lora_io.inspect import describe, report_lines

from tests.lora_io.helpers import random_lora


def test_describe_a_lycoris_file(adapters, tmp_path):
    adapter = adapters["sd15"]
    state = random_lora(adapter.components(), {"unet": ["to_q", "to_k"]}, kind="loha", rank=4, alpha=2.0)
    path = save_lora(state, tmp_path / "h.safetensors", arch="sd15",
                     metadata={"name": "h", "trigger_word": "sks", "tag_frequency": {"a": {"sks": 3, "dog": 5}}})
    info = describe(load_lora(path))
    assert (info["architecture"], info["format"]) == ("sd15", "kohya")
    assert info["network_types"] == {"loha": info["modules"]} and info["components"] == {"unet": info["modules"]}
    assert info["rank_alpha"] == [{"rank": 4, "alpha": 2.0, "layers": "linear", "modules": info["modules"]}]
    assert info["trigger_words"] == ["sks", "dog"]
    text = "\n".join(report_lines(info, show_keys=True))
    assert "architecture: sd15" in text and "ss_network_module: lycoris.kohya" in text and "loha rank 4" in text


def test_unknown_architecture_is_inspected_but_not_converted(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file({"lora_unet_up_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8),
               "lora_unet_up_blocks_1_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 2)}, str(path))
    info = describe(load_lora(path, require_arch=False))
    assert info["architecture"] is None and info["components"] == {"unet": 1}
    assert "unknown (set arch)" in report_lines(info)[1]
    with pytest.raises(EaselError, match="set `arch`"):
        load_lora(path)
    assert load_lora(path, arch="sd15").modules["unet.up_blocks.1.attentions.0.proj_in"].alpha == 2.0
