"""ai-toolkit's ``job: extract`` and ``job: mod`` examples run: LoRAs taken from two checkpoints reproduce the
weight change, and a rescaled LoRA at target_weight is the old one at current_weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import run
from toolkit.config.blocks import ModelConfig
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError
from toolkit.lora_io.model import delta_weight
from toolkit.lora_io.ops import RankRule, extract_module, scale_module
from toolkit.models.loading import load_adapter

from tests.lora_io.helpers import load_lora, random_lora, save_lora

FIXTURES = Path(__file__).parents[1] / "fixtures" / "aitoolkit"
CHANGED = {"unet": ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
                    "down_blocks.0.resnets.0.conv1"],
           "text_encoder": ["encoder.layers.0.self_attn.q_proj"]}


@pytest.fixture
def sd15(registry):
    return load_adapter(ModelConfig(name_or_path="tiny:sd15", arch="sd15"), registry, device="cpu", dtype="fp32")


@pytest.fixture
def tiny_pair(sd15, tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """A tiny SD 1.5 folder and a "fine-tuned" copy whose CHANGED layers moved by a rank-2 update; returns the updates."""
    pipe = sd15.pipeline()
    pipe.save_pretrained(tmp_path / "base", safe_serialization=True)
    generator = torch.Generator().manual_seed(11)
    deltas = {}
    with torch.no_grad():
        for component, paths in CHANGED.items():
            for path in paths:
                layer = getattr(pipe, component).get_submodule(path)
                out_f, rest = layer.weight.shape[0], layer.weight[0].numel()
                delta = (torch.randn(out_f, 2, generator=generator) @ torch.randn(2, rest, generator=generator) * 0.05)
                layer.weight += delta.reshape(layer.weight.shape)
                deltas[f"{component}.{path}"] = delta.reshape(layer.weight.shape).clone()
    pipe.save_pretrained(tmp_path / "tuned", safe_serialization=True)
    for name, value in (("TINY_BASE", tmp_path / "base"), ("TINY_TUNED", tmp_path / "tuned"), ("OUT", tmp_path / "out")):
        monkeypatch.setenv(name, str(value))
    return deltas


def test_extract_example_reproduces_the_weight_change(tiny_pair, tmp_path):
    assert run.main([str(FIXTURES / "extract_example.yaml")]) == 0
    folder = tmp_path / "out" / "folder"
    names = ["name_of_your_model_64_32", "name_of_your_model_ratio_02", "name_of_your_model_4", "name_of_your_model_q05"]
    assert sorted(p.stem for p in folder.glob("*.safetensors")) == sorted(names)
    assert (tmp_path / "out" / "absolute" / "path" / "for" / "this" / "output.safetensors").is_file()
    locon = load_lora(folder / "name_of_your_model_64_32.safetensors", arch="sd15")
    assert {key for key in locon.modules} == set(tiny_pair)
    for key, module in locon.modules.items():
        expected = tiny_pair[key]
        assert torch.allclose(delta_weight(module, tuple(expected.shape)), expected, atol=2e-3), key
    lora = load_lora(folder / "name_of_your_model_4.safetensors", arch="sd15")
    assert {key for key in lora.modules} == set(tiny_pair) - {"unet.down_blocks.0.resnets.0.conv1"}
    assert {module.rank for module in lora.modules.values()} <= {2, 4}
    assert "put" in lora.metadata.get("easel.extra", "")


def test_extract_dry_run_and_refused_sd2(registry, tiny_pair, tmp_path, capsys):
    assert run.main(["--dry-run", str(FIXTURES / "extract_example.yaml")]) == 0
    assert "extract locon (fixed: linear 64, conv 32)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"is_v2 selects Stable Diffusion 2.x, which easel does not have"):
        load_job_config(FIXTURES / "extract_example.yaml", registry, overrides=["config.is_v2=true"])


def test_extract_modes_pick_ranks_as_ai_toolkit():
    u, v = torch.linalg.qr(torch.randn(16, 16))[0], torch.linalg.qr(torch.randn(16, 16))[0]
    singular = torch.tensor([8.0, 4.0, 2.0, 1.0] + [0.0] * 12)
    delta = (u * singular) @ v.T
    ranks = {"ratio": RankRule(sv_ratio=1 / 0.3), "threshold": RankRule(threshold=1.5), "quantile": RankRule(quantile=0.9)}
    got = {mode: extract_module("unet.x", delta, rule)[0].rank for mode, rule in ranks.items()}
    assert got == {"ratio": 2, "threshold": 3, "quantile": 2}  # running sums 8, 12, 14, 15: two stay under 13.5


def test_mod_example_rescales_so_target_weight_gives_the_old_update(sd15, tmp_path, monkeypatch):
    state = random_lora(sd15.components(), {"unet": ["to_q", "proj_in"], "text_encoder": ["q_proj"]}, seed=3)
    source = save_lora(state, tmp_path / "in.safetensors", arch="sd15")
    monkeypatch.setenv("LORA_IN", str(source))
    monkeypatch.setenv("LORA_OUT", str(tmp_path / "out.safetensors"))
    assert run.main([str(FIXTURES / "mod_lora_scale.yaml")]) == 0
    before, after = load_lora(source), load_lora(tmp_path / "out.safetensors")
    assert after.metadata["ss_output_name"] == "name_of_your_model_v1"
    for key, module in before.modules.items():
        assert torch.allclose(delta_weight(after.modules[key]), 6.0 * delta_weight(module), atol=1e-2, rtol=1e-2), key


@pytest.mark.parametrize("kind", ["lora", "loha", "lokr"])
@pytest.mark.parametrize("target,factor", [("up_down", -2.5), ("alpha", 0.5)])
def test_scale_module_scales_the_update(kind, target, factor, sd15):
    from toolkit.lora_io.keys import group_modules

    state = random_lora(sd15.components(), {"unet": ["attn1.to_k"]}, kind=kind, seed=5)
    for module in group_modules(state).values():
        scaled = scale_module(module, factor, target)
        assert torch.allclose(delta_weight(scaled), factor * delta_weight(module), atol=1e-5)
