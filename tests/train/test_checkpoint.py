"""save_lora (canonical keys, dtype, metadata, atomic) and the run's save files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from tests.train.fakes import FakeDenoiser
from toolkit.config.blocks import NetworkConfig, TrainConfig
from toolkit.lora_io import load_lora
from toolkit.network.network import Network
from toolkit.train.checkpoint import SaveFiles, lora_metadata, save_lora, tag_frequency
from toolkit.train.state import save_state, state_path


def network() -> Network:
    torch.manual_seed(0)
    return Network.build({"transformer": FakeDenoiser()}, {"transformer": ["to_q"]}, NetworkConfig(linear=4, linear_alpha=2))


def test_save_lora_writes_the_architecture_format_with_metadata(tmp_path) -> None:
    net = network()
    config = NetworkConfig(linear=4, linear_alpha=2)
    train = TrainConfig(lr=3e-4, optimizer="adamw", seed=7)
    metadata = lora_metadata(name="run", base_model="tiny:fake", network=config, train=train, trigger_word="sks", step=7,
                             resolution=[512, 768], images=12, tag_frequency=tag_frequency({"set": ["a, b", "a"]}),
                             prediction_type="flow", config={"job": "extension", "x": [1]}, meta={"author": "me"})
    path = tmp_path / "run.safetensors"
    path.write_bytes(b"old")
    save_lora(net, path, arch=fake_arch(), format=None, metadata=metadata, dtype="fp16")
    assert sorted(os.listdir(tmp_path)) == ["run.safetensors"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
    with safe_open(str(path), "pt") as handle:
        assert all(key.startswith("diffusion_model.") for key in handle.keys())
        assert all(handle.get_tensor(key).dtype == torch.float16 for key in handle.keys())
        meta = handle.metadata()
    loaded = load_lora(path, arch=fake_arch()).state_dict()
    assert sorted(loaded) == sorted(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(loaded[key].float(), value.detach().half().float())
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2" and meta["ss_steps"] == "7"
    assert meta["ss_output_name"] == "run" and meta["modelspec.trigger_phrase"] == "sks"
    assert json.loads(meta["ss_tag_frequency"]) == {"set": {"a": 2, "b": 1}} and meta["ss_num_train_images"] == "12"
    assert meta["ss_learning_rate"] == "0.0003" and meta["ss_seed"] == "7" and meta["modelspec.author"] == "me"
    assert json.loads(meta["easel.config"]) == {"job": "extension", "x": [1]}


def fake_arch():
    from tests.train.harness import fake_registry

    return fake_registry().arch("fake")


def test_prune_keeps_the_newest_steps_with_their_states(tmp_path) -> None:
    files = SaveFiles(tmp_path, "run", keep=2)
    for step in (2, 4, 6):
        files.step_lora(step).write_bytes(b"x")
        save_state(state_path(tmp_path, "run", step), {"step": step})
    save_state(state_path(tmp_path, "run", 7), {"step": 7})  # the final state has no numbered LoRA
    files.final_lora.write_bytes(b"x")
    removed = files.prune()
    assert sorted(p.name for p in removed) == ["run_000000002.safetensors", "run_000000002.state.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors", "run_000000004.safetensors", "run_000000004.state.pt",
                                                          "run_000000006.safetensors", "run_000000006.state.pt", "run_000000007.state.pt"]
    save_state(state_path(tmp_path, "run", 9), {"step": 9})  # a newer final state makes the older one redundant
    assert [p.name for p in files.prune()] == ["run_000000007.state.pt"]
    assert SaveFiles(tmp_path, "run", keep=0).prune() == []


def test_a_save_that_fills_the_disk_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    from tests.faults.disk import Budget, fill_after
    from toolkit.output import DiskFull

    path = tmp_path / "run.safetensors"
    save_lora(network(), path, arch=fake_arch(), format=None, metadata={"steps": 1}, dtype="fp32")
    before = path.read_bytes()
    fill_after(monkeypatch, Budget(100))
    with pytest.raises(DiskFull, match=f"no space left on device at {path}; the previous run.safetensors is intact"):
        save_lora(network(), path, arch=fake_arch(), format=None, metadata={"steps": 2}, dtype="fp32")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["run.safetensors"]
