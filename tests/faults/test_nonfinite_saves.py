"""Non-finite saves: every save is checked finite in the dtype it is stored in, before it replaces anything.

The issue's case: weights that grow past fp16's range while the loss is still finite were saved as inf, and
that file was then named "the last good save".
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.train.harness import fake_registry, run_main, write_config
from tests.train.test_checkpoint import network
from toolkit.errors import EaselError
from toolkit.lora_io import load_lora, save_lora
from toolkit.lora_io.files import NonFiniteLora
from toolkit.train.state import save_state


def fake_arch():
    return fake_registry().arch("fake")


def test_a_run_whose_weights_outgrow_fp16_stops_and_names_a_finite_last_save(tmp_path: Path) -> None:
    """SGD at lr 2e5: the step-1 save fits fp16, the step-2 weights do not (the loss is still finite there)."""
    config = write_config(tmp_path, train={"steps": 6, "lr": 2e5, "optimizer": "sgd"},
                          save={"dtype": "fp16", "save_every": 1}, sample=None)
    assert run_main([str(config)]) == 2
    folder = tmp_path / "output" / "fakerun"
    log = (folder / "log.txt").read_text()
    refused = re.search(r"refused to write (\S+)_(\d{9})\.safetensors: .* grew past what float16 holds", log)
    good = re.search(r"the last good save is (\S+\.safetensors)", log)
    assert refused and good, log[-2000:]
    assert not Path(f"{refused.group(1)}_{refused.group(2)}.safetensors").exists()
    assert good.group(1).endswith(f"_{int(refused.group(2)) - 1:09d}.safetensors")
    losses = [float(line.split(",")[1]) for line in (folder / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == int(refused.group(2)) and all(math.isfinite(loss) for loss in losses)
    for path in folder.glob("*.safetensors"):  # every file kept loads, and is finite
        assert all(torch.isfinite(t).all() for t in load_lora(path, arch=fake_arch()).state_dict().values())


def test_save_lora_refuses_overflow_and_nan_before_replacing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.safetensors"
    save_lora(network().state_dict(), path, arch=fake_arch(), metadata={"steps": 1}, dtype="fp16")
    before = path.read_bytes()
    big = {key: torch.full_like(value, 1e6) if key.endswith("lora_B.weight") else value
           for key, value in network().state_dict().items()}
    with pytest.raises(NonFiniteLora, match=r"grew past what float16 holds .* its limit 65504\): save in bf16 or fp32"):
        save_lora(big, path, arch=fake_arch(), metadata={"steps": 2}, dtype="fp16")
    assert save_lora(big, tmp_path / "wide.safetensors", arch=fake_arch(), metadata={}, dtype="bf16").is_file()
    nan = {key: value * float("nan") for key, value in network().state_dict().items()}
    with pytest.raises(NonFiniteLora, match=r"the weights themselves hold inf or NaN"):
        save_lora(nan, path, arch=fake_arch(), metadata={"steps": 3}, dtype="fp32")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors", "wide.safetensors"]


def test_loading_a_lora_with_inf_names_the_file_and_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "run.safetensors"
    save_lora(network().state_dict(), path, arch=fake_arch(), metadata={}, dtype="fp16")
    tensors = load_file(path)
    broken = sorted(tensors)[0]
    tensors[broken] = torch.full_like(tensors[broken], float("inf"))
    save_file(tensors, str(tmp_path / "inf.safetensors"))
    with pytest.raises(NonFiniteLora) as error:
        load_lora(tmp_path / "inf.safetensors", arch=fake_arch())
    assert str(tmp_path / "inf.safetensors") in str(error.value) and broken in str(error.value)
    assert "1 of" in str(error.value)


def test_a_state_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run_000000002.state.pt"
    with pytest.raises(EaselError, match="refused to write .*inf or NaN"):
        save_state(path, {"step": 2, "network": {"a.lora_B.weight": torch.tensor([1.0, float("inf")])}})
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", b"\x00" * 8 + b"{}"])
def test_a_damaged_lora_file_is_a_clear_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(content)
    with pytest.raises(EaselError, match=f"'{path}' (could not be read as a .safetensors file|holds no tensors)"):
        load_lora(path, arch=fake_arch())
