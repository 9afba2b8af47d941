"""bf16 working copies of the float32 adapter weights (toolkit/train/working.py) train exactly as autocast does."""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.train.harness import run_main, write_config
from tests.train.test_trainer import NO_SAMPLES, run_dir
from toolkit.train.logs import read_losses
from toolkit.train.working import WorkingCopies


class Toy(nn.Module):
    """A frozen bf16 layer with a float32 LoRA beside it, and a layer the forward pass never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(16, 16).to(torch.bfloat16).requires_grad_(False)
        self.lora_A = nn.Linear(16, 4, bias=False)
        self.lora_B = nn.Linear(4, 16, bias=False)
        nn.init.normal_(self.lora_B.weight)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * 0.5


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x).float().pow(2).mean()


def test_steps_with_accumulation_equal_autocast_bit_for_bit() -> None:
    torch.manual_seed(0)
    plain = Toy()
    copied = copy.deepcopy(plain)
    working = WorkingCopies([p for p in copied.parameters() if p.requires_grad], torch.bfloat16)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (plain, copied)]
    for _ in range(4):
        for _ in range(3):  # gradient accumulation: the float32 sums must match too
            x = torch.randn(8, 16, dtype=torch.bfloat16)
            expected = loss_of(plain, x)
            expected.backward()
            with working.active():
                assert copied.lora_A.weight.dtype == torch.bfloat16
                got = loss_of(copied, x)
                got.backward()
            assert torch.equal(expected, got)
        for a, b in zip(plain.parameters(), copied.parameters()):
            assert (a.grad is None) == (b.grad is None)  # the unused layer keeps no gradient (AdamW skips it)
            assert a.grad is None or (b.grad.dtype == torch.float32 and torch.equal(a.grad, b.grad))
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for a, b in zip(plain.parameters(), copied.parameters()):
        assert b.dtype == a.dtype and torch.equal(a, b)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3], ids=["clipped", "under the limit"])
def test_clipping_the_flat_gradients_equals_torch_bit_for_bit(max_norm: float) -> None:
    """WorkingCopies.clip_grad_norm_ (the trainer's clipping with working copies) gives torch's clip_grad_norm_'s
    norm and gradients exactly, with the unused layer's parameters (no gradient) among the parameters."""
    torch.manual_seed(0)
    plain = nn.Sequential(*(Toy() for _ in range(12)))  # enough tensors for a different summation order to show
    copied = copy.deepcopy(plain)
    working = WorkingCopies([p for p in copied.parameters() if p.requires_grad], torch.bfloat16)
    for _ in range(2):  # accumulated, so the buffer holds a sum
        x = torch.randn(64, 16, dtype=torch.bfloat16)
        loss_of(plain, x).backward()
        with working.active():
            loss_of(copied, x).backward()
    trained = [p for p in plain.parameters() if p.requires_grad]
    expected = torch.nn.utils.clip_grad_norm_(trained, max_norm)
    assert torch.equal(working.clip_grad_norm_(max_norm), expected)
    for a, b in zip(plain.parameters(), copied.parameters()):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad))
    assert (expected > max_norm) == (max_norm == 1e-3)


def test_a_replaced_parameter_tensor_is_taken_in_again() -> None:
    model = Toy()
    params = [model.lora_A.weight, model.lora_B.weight]
    working = WorkingCopies(params, torch.bfloat16)
    with torch.no_grad():
        model.lora_A.weight.data = torch.full_like(model.lora_A.weight, 0.25)  # as .to(device) or assign=True would
    with working.active():
        assert torch.equal(model.lora_A.weight, torch.full((4, 16), 0.25, dtype=torch.bfloat16))
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
    assert model.lora_A.weight.data_ptr() == working.master.data_ptr()
    assert model.lora_A.weight.grad.data_ptr() == working.grads.data_ptr()


def test_an_error_inside_leaves_the_float32_weights_and_gradients() -> None:
    model = Toy()
    params = [model.lora_A.weight, model.lora_B.weight]
    working = WorkingCopies(params, torch.bfloat16)
    with working.active():
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
    grads = [p.grad.clone() for p in params]
    with pytest.raises(RuntimeError), working.active():
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
        raise RuntimeError("loss not finite")
    assert all(p.dtype == torch.float32 for p in params)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))


def test_only_float32_parameters_on_one_device_are_supported() -> None:
    assert WorkingCopies.supported([nn.Parameter(torch.zeros(2))])
    assert not WorkingCopies.supported([nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))])
    assert not WorkingCopies.supported([])


def trained(tmp_path: Path, working: bool | None, network: dict) -> tuple[list, dict[str, torch.Tensor], str]:
    """A bf16 run with accumulation, dropout and the text encoder trained: its losses, LoRA file and log."""
    train = {"steps": 4, "dtype": "bf16", "gradient_accumulation": 2, "train_text_encoder": True, "working_copies": working}
    config = write_config(tmp_path, train=train, network={"linear": 4, "linear_alpha": 4, "dropout": 0.2, **network}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    folder = run_dir(tmp_path)
    losses = [(r["step"], r["loss"]) for r in read_losses(folder / "loss.csv")]
    return losses, load_file(folder / "fakerun.safetensors"), (folder / "log.txt").read_text()


@pytest.mark.parametrize("network", [{"type": "lora"}, {"type": "locon", "conv": 2, "conv_alpha": 2}], ids=["lora", "locon"])
def test_training_with_working_copies_equals_autocast(tmp_path: Path, network: dict) -> None:
    on, off = trained(tmp_path / "on", None, network), trained(tmp_path / "off", False, network)
    assert "bf16 working copies" in on[2] and "working copies" not in off[2]
    assert on[0] == off[0]
    assert on[1].keys() == off[1].keys() and all(torch.equal(on[1][k], off[1][k]) for k in on[1])


def test_other_adapters_take_working_copies_only_when_asked(tmp_path: Path) -> None:
    network = {"type": "lokr"}
    assert "working copies" not in trained(tmp_path / "default", None, network)[2]
    assert "bf16 working copies" in trained(tmp_path / "asked", True, network)[2]


def test_resume_with_working_copies_reproduces_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sections = dict(train={"steps": 4, "dtype": "bf16", "gradient_accumulation": 2, "ema_config": {"use_ema": True}},
                    save={"save_every": 4}, **NO_SAMPLES)
    straight = write_config(tmp_path / "straight", **sections)
    assert run_main([str(straight)]) == 0
    resumed = write_config(tmp_path / "resumed", **sections)
    monkeypatch.setenv("EASEL_FAKE_SIGNAL_AT", f"3:{int(signal.SIGTERM)}")
    assert run_main([str(resumed)]) == 143
    monkeypatch.delenv("EASEL_FAKE_SIGNAL_AT")
    assert run_main([str(resumed)]) == 0
    a = load_file(run_dir(tmp_path / "straight") / "fakerun.safetensors")
    b = load_file(run_dir(tmp_path / "resumed") / "fakerun.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [[(r["step"], r["loss"], r["lr"]) for r in read_losses(run_dir(tmp_path / name) / "loss.csv")]
            for name in ("straight", "resumed")]
    assert rows[0] == rows[1]


def test_working_copies_with_fp32_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, train={"working_copies": True}, **NO_SAMPLES)
    assert run_main([str(config)]) == 2
    assert "train.working_copies: needs train.dtype bf16 or fp16" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["sd15", "zimage"])
def test_real_architectures_train_the_same_with_working_copies(tmp_path: Path, arch: str) -> None:
    """diffusers' gradient checkpointing and peft's layers on the tiny models: bf16 runs with and without copies."""
    import run
    from toolkit.output import dump_yaml
    from toolkit.testing.demo import make

    make(tmp_path / "data", 2)
    files = {}
    for working in (True, False):
        folder = tmp_path / str(working)
        config = folder / "train.yaml"
        folder.mkdir()
        config.write_text(dump_yaml({"job": "extension", "config": {"name": "w", "process": [{
            "type": "lora_trainer", "training_folder": str(folder / "output"), "device": "cpu",
            "network": {"type": "lora", "linear": 4, "linear_alpha": 4, "dropout": 0.1},
            "save": {"dtype": "fp32", "save_every": 1000},
            "datasets": [{"folder_path": str(tmp_path / "data"), "resolution": [64]}],
            "train": {"steps": 2, "batch_size": 2, "gradient_accumulation": 2, "lr": 1e-2, "dtype": "bf16",
                      "gradient_checkpointing": True, "seed": 3, "working_copies": working},
            "model": {"name_or_path": f"tiny:{arch}", "arch": arch},
        }]}}), encoding="utf-8")
        assert run.main([str(config)]) == 0
        files[working] = load_file(folder / "output" / "w" / "w.safetensors")
    assert files[True].keys() == files[False].keys()
    assert all(torch.equal(files[True][k], files[False][k]) for k in files[True])
    assert any(files[True][k].abs().sum() > 0 for k in files[True] if "lora_up" in k or "lora_B" in k)


@pytest.mark.parametrize("memory_options", [
    {"model": {"quantize": True, "qtype": "qint8", "low_vram": True, "layer_offloading": True, "layer_offloading_fraction": 0.5},
     "train": {"optimizer": "adamw8bit", "cache_text_embeddings": True, "unload_text_encoder": True}},
    {"model": {}, "train": {"compile": True}},
], ids=["qint8-offloaded-8bit", "compiled"])
def test_working_copies_with_the_memory_options(tmp_path: Path, memory_options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quantized, offloaded base with an 8-bit optimizer, and compiled blocks (whose guards see the weights'
    dtype change between training and previews): the same LoRA with and without working copies."""
    import torch._dynamo

    import run
    from tests.train.test_memory_options import config, trained as run_files
    from toolkit.models import memory

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")
    files = {}
    for working in (True, False):
        torch._dynamo.reset()
        train = {"gradient_checkpointing": True, "dtype": "bf16", "working_copies": working, **memory_options["train"]}
        path = config(tmp_path, f"w{working}", "zimage:turbo", sample=True, model=memory_options["model"], train=train)
        assert run.main([str(path)]) == 0
        files[working], log, losses = run_files(tmp_path, f"w{working}")
        assert ("bf16 working copies" in log) == working and len(losses) == 4
    torch._dynamo.reset()
    assert all(torch.equal(files[True][k], files[False][k]) for k in files[True])
