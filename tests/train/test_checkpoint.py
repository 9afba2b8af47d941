"""save_lora (canonical keys, dtype, metadata, atomic) and the run's save files."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open

from tests.train.fakes import FakeDenoiser
from toolkit.config.blocks import NetworkConfig
from toolkit.network.network import Network
from toolkit.train.checkpoint import SaveFiles, lora_metadata, save_lora
from toolkit.train.state import save_state, state_path


def network() -> Network:
    torch.manual_seed(0)
    return Network.build({"transformer": FakeDenoiser()}, {"transformer": ["to_q"]}, NetworkConfig(linear=4, linear_alpha=2))


def test_save_lora_writes_canonical_keys_in_the_save_dtype_with_metadata(tmp_path) -> None:
    net = network()
    config = NetworkConfig(linear=4, linear_alpha=2)
    metadata = lora_metadata(name="run", base_model="tiny:fake", arch="fake", network=config, trigger_word="sks", step=7,
                             resolution=[512, 768], images=12, config={"job": "extension", "x": [1]}, meta={"author": "me"})
    path = tmp_path / "run.safetensors"
    path.write_bytes(b"old")
    save_lora(net, path, metadata, torch.float16)
    assert sorted(os.listdir(tmp_path)) == ["run.safetensors"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
    with safe_open(str(path), "pt") as handle:
        assert sorted(handle.keys()) == sorted(net.state_dict())
        assert all(handle.get_tensor(key).dtype == torch.float16 for key in handle.keys())
        meta = handle.metadata()
    assert meta["easel_format"] == "easel-canonical" and meta["network_type"] == "lora"
    assert meta["network_rank"] == "4" and meta["network_alpha"] == "2.0" and "network_conv_rank" not in meta
    assert meta["trigger_word"] == "sks" and meta["steps"] == "7" and json.loads(meta["resolution"]) == [512, 768]
    assert meta["num_train_images"] == "12" and json.loads(meta["config"]) == {"job": "extension", "x": [1]}
    assert json.loads(meta["meta"]) == {"author": "me"} and meta["base_model"] == "tiny:fake" and meta["arch"] == "fake"


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
