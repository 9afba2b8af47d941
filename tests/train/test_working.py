"""bf16 working copies of the float32 adapter weights (toolkit/train/working.py) train exactly as autocast does."""

from __future__ import annotations

import contextlib
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


@pytest.fixture(params=["stand-ins", "data swaps"])
def owned(request: pytest.FixtureRequest) -> bool:
    """Both ways of pointing the modules at the working copies: stand-in parameters in the modules (given the owner
    module, as the trainer does) and ``.data`` swaps of the float32 parameters (without it)."""
    return request.param == "stand-ins"


def copies(model: nn.Module, owned: bool, flat: bool = False, params: list[nn.Parameter] | None = None) -> WorkingCopies:
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    return WorkingCopies(params, torch.bfloat16, flat=flat, owner=model if owned else None)


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x).float().pow(2).mean()


def test_steps_with_accumulation_equal_autocast_bit_for_bit(owned: bool) -> None:
    torch.manual_seed(0)
    plain = Toy()
    copied = copy.deepcopy(plain)
    working = copies(copied, owned)
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


@pytest.mark.parametrize("reached", [(False, True, False), (True, False, False), (False, False, True)])
@pytest.mark.parametrize("flat", [False, True], ids=["per tensor", "flat"])
def test_a_layer_reached_in_some_micro_batches_accumulates_as_autocast_does(reached: tuple[bool, ...], flat: bool,
                                                                           owned: bool) -> None:
    """Gathering must zero what a micro-batch without a gradient leaves behind, before and after one with it."""
    torch.manual_seed(0)
    plain = Toy()
    copied = copy.deepcopy(plain)
    working = copies(copied, owned, flat=flat)
    for uses_unused in reached * 2:
        x, y = torch.randn(8, 16, dtype=torch.bfloat16), torch.randn(3, 2, dtype=torch.bfloat16)
        for model, context in ((plain, contextlib.nullcontext()), (copied, working.active())):
            with context:
                loss = loss_of(model, x)
                if uses_unused:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        loss = loss + model.unused(y).float().sum()
                loss.backward()
    for a, b in zip(plain.parameters(), copied.parameters()):
        assert (a.grad is None) == (b.grad is None)
        assert a.grad is None or (b.grad.dtype == torch.float32 and torch.equal(a.grad, b.grad))


@pytest.mark.parametrize("max_norm", [1e-3, 1e3], ids=["clipped", "under the limit"])
def test_clipping_the_flat_gradients_equals_torch_bit_for_bit(max_norm: float, owned: bool) -> None:
    """WorkingCopies.clip_grad_norm_ (the trainer's clipping with working copies) gives torch's clip_grad_norm_'s
    norm and gradients exactly, with the unused layer's parameters (no gradient) among the parameters."""
    torch.manual_seed(0)
    plain = nn.Sequential(*(Toy() for _ in range(12)))  # enough tensors for a different summation order to show
    copied = copy.deepcopy(plain)
    working = copies(copied, owned)
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


def test_a_replaced_parameter_tensor_is_taken_in_again(owned: bool) -> None:
    model = Toy()
    params = [model.lora_A.weight, model.lora_B.weight]
    working = copies(model, owned, params=params)
    with torch.no_grad():
        model.lora_A.weight.data = torch.full_like(model.lora_A.weight, 0.25)  # as .to(device) or assign=True would
    with working.active():
        assert torch.equal(model.lora_A.weight, torch.full((4, 16), 0.25, dtype=torch.bfloat16))
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
    assert model.lora_A.weight.data_ptr() == working.master.data_ptr()
    assert model.lora_A.weight.grad.data_ptr() == working.grads.data_ptr()


def test_an_error_inside_leaves_the_float32_weights_and_gradients(owned: bool) -> None:
    model = Toy()
    params = [model.lora_A.weight, model.lora_B.weight]
    working = copies(model, owned, params=params)
    with working.active():
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
    grads = [p.grad.clone() for p in params]
    with pytest.raises(RuntimeError), working.active():
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
        raise RuntimeError("loss not finite")
    assert all(p.dtype == torch.float32 for p in params)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))
    assert model.lora_A.weight is params[0] and model.lora_B.weight is params[1]


def test_stand_ins_take_the_modules_places_for_the_block_without_a_dispatch_per_parameter() -> None:
    """The float32 parameters stay where the optimizer, EMA and saving look for them; the modules hold bf16 stand-ins
    inside ``active()`` only, put there without the ``.data`` swaps' dispatch each (``_has_compatible_shallow_copy_type``)."""
    model = nn.Sequential(*(Toy() for _ in range(4)))
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    for owned in (True, False):
        working = copies(model, owned)
        with torch.profiler.profile() as profile, working.active():
            holders = [model[0].lora_A.weight, model[3].unused.bias]
            dtype = holders[0].dtype
            loss_of(model, x).backward()
        swaps = sum(event.name == "aten::_has_compatible_shallow_copy_type" for event in profile.events())
        assert swaps == (0 if owned else 2 * len(params))
        assert (holders[0] is params[0]) != owned and dtype == torch.bfloat16
        assert holders[1] is (params[-1] if not owned else working._stand_ins[-1])
        assert [p for p in model.parameters() if p.requires_grad] == params and all(p.dtype == torch.float32 for p in params)


class Holding(Toy):
    """A forward pass that keeps its own reference to a float32 weight, past the module holding it."""

    def __init__(self) -> None:
        super().__init__()
        self.held = [self.lora_A.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(x @ self.held[0].t())


@pytest.mark.parametrize("flat", [False, True], ids=["per tensor", "flat"])
def test_a_parameter_read_past_its_module_turns_to_data_swaps_with_the_same_steps(flat: bool,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Its gradient reaches the float32 parameter itself: the first step takes it in and warns, and the working
    copies swap ``.data`` from then on (which such a forward pass reads too). The weights stay autocast's."""
    torch.manual_seed(0)
    plain = Holding()
    copied = copy.deepcopy(plain)
    copied.held = [copied.lora_A.weight]
    runs = []
    for model, working in ((plain, None), (copied, copies(copied, owned=True, flat=flat))):
        params = [p for p in model.parameters() if p.requires_grad]
        groups = working.optimizer_groups([{"params": params, "lr": 1e-2}]) if working else [{"params": params}]
        runs.append((model, working, torch.optim.AdamW(groups[0]["params"], lr=1e-2)))
    with caplog.at_level("WARNING"):
        for step in range(3):
            for _ in range(2):
                x = torch.randn(8, 16, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(step))
                for model, working, _ in runs:
                    with working.active() if working else contextlib.nullcontext():
                        loss_of(model, x).backward()
            for model, working, optimizer in runs:
                working.step(optimizer) if working else (optimizer.step(), optimizer.zero_grad(set_to_none=True))
    assert caplog.text.count("read past its module") == 1 and "swapped in through .data" in runs[1][1].describe()
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), copied.parameters()))


def test_compiled_modules_with_stand_ins_equal_eager_and_compile_once() -> None:
    """Dynamo sees the stand-ins as the modules' parameters: the same numbers as eager autocast, and one graph for
    every step (the stand-ins are the same tensors each time)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    torch.manual_seed(0)
    plain = Toy()
    copied = copy.deepcopy(plain)
    counter = CompileCounter()
    compiled = torch.compile(copied, backend=counter)
    working = copies(copied, owned=True)
    for step in range(3):
        x = torch.randn(8, 16, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(step))
        expected = loss_of(plain, x)
        expected.backward()
        with working.active():
            got = loss_of(compiled, x)
            got.backward()
        assert torch.equal(expected, got)
    assert all(a.grad is None or torch.equal(a.grad, b.grad) for a, b in zip(plain.parameters(), copied.parameters()))
    assert counter.frame_count == 1
    torch._dynamo.reset()


def test_only_float32_parameters_on_one_device_are_supported() -> None:
    assert WorkingCopies.supported([nn.Parameter(torch.zeros(2))])
    assert not WorkingCopies.supported([nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))])
    assert not WorkingCopies.supported([])


def _optimizer(name: str, params: list, options: dict) -> torch.optim.Optimizer:
    from toolkit.train.optimizers import build_optimizer

    return build_optimizer(name, [{"params": params, "lr": 1e-2}], 1e-2, options)


def _two_ways(name: str, steps: int = 4, layers: int = 3, options: dict | None = None,
              per_tensor_options: dict | None = None, owned: bool = True) -> tuple[nn.Module, nn.Module, WorkingCopies]:
    """The same toy models trained with working copies, per tensor and flat (``name``'s optimizer, weight decay on
    where it has one); the unused layers get no gradient."""
    torch.manual_seed(0)
    per_tensor = nn.Sequential(*(Toy() for _ in range(layers)))
    flat_model = copy.deepcopy(per_tensor)
    options = {"weight_decay": 0.1} if options is None else options
    runs = []
    for model, flat, extra in ((per_tensor, False, per_tensor_options or {}), (flat_model, True, {})):
        working = copies(model, owned, flat=flat)
        groups = working.optimizer_groups([{"params": working.params, "lr": 1e-2}])
        runs.append((model, working, _optimizer(name, groups[0]["params"], {**options, **extra})))
    for step in range(steps):
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(step), dtype=torch.bfloat16)
        for model, working, optimizer in runs:
            with working.active():
                loss_of(model, x).backward()
            working.step(optimizer, max_grad_norm=1.0)
    assert all(p.grad is None for model, _, _ in runs for p in model.parameters())
    return per_tensor, flat_model, runs[1][1]


@pytest.mark.parametrize("name", ["adamw", "adam", "lion", "adamw8bit"])
def test_a_flat_step_equals_the_per_tensor_step_bit_for_bit(name: str, owned: bool) -> None:
    """One flat tensor for the optimizer: the same weights, and the layers without a gradient untouched (weight decay
    would move them; a per-tensor step skips them). The 8-bit state (40 layers: 5,360 values) is quantized in the same
    blocks as per tensor, since every tensor starts a block; per tensor, tensors under ``min_8bit_size`` (4,096 by
    default) keep a 32-bit state, so that run sets it to 0."""
    layers = 40 if name == "adamw8bit" else 3
    per_tensor, flat, working = _two_ways(name, layers=layers, owned=owned,
                                          per_tensor_options={"min_8bit_size": 0} if name == "adamw8bit" else {})
    assert len(working._flat) == 1 and "1 flat tensors" in working.describe()
    for a, b in zip(per_tensor.parameters(), flat.parameters()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    start = nn.Sequential(*(Toy() for _ in range(layers)))
    assert torch.equal(flat[0].unused.weight, start[0].unused.weight)
    assert not torch.equal(flat[0].lora_A.weight, start[0].lora_A.weight)


def test_a_flat_prodigy_step_is_close() -> None:
    """Prodigy's step size sums over all the group's values: the same sums, in another order."""
    per_tensor, flat, _ = _two_ways("prodigy", steps=6, layers=40, options={})
    with torch.no_grad():
        differences = [float((a - b).abs().max()) for a, b in zip(per_tensor.parameters(), flat.parameters())]
        assert max(differences) < 1e-5 * max(float(p.abs().max()) for p in per_tensor.parameters())


def test_a_replaced_parameter_tensor_keeps_the_flat_optimizer_parameter_in_step() -> None:
    model = Toy()
    params = [model.lora_A.weight, model.lora_B.weight]
    working = WorkingCopies(params, torch.bfloat16, flat=True)
    [group] = working.optimizer_groups([{"params": params, "lr": 1e-2}])
    optimizer = torch.optim.AdamW(group["params"], lr=1e-2)
    with torch.no_grad():
        model.lora_A.weight.data = torch.full_like(model.lora_A.weight, 0.25)
    with working.active():
        loss_of(model, torch.ones(2, 16, dtype=torch.bfloat16)).backward()
    working.step(optimizer)
    flat = group["params"][0]
    assert flat.data_ptr() == working.master.data_ptr() and flat in optimizer.state
    assert not torch.equal(model.lora_A.weight, torch.full((4, 16), 0.25)), "the step reached the new tensor"


def test_flat_groups_must_follow_the_parameters_in_order() -> None:
    model = Toy()
    working = WorkingCopies([model.lora_A.weight, model.lora_B.weight], torch.bfloat16, flat=True)
    with pytest.raises(ValueError, match="group after group"):
        working.optimizer_groups([{"params": [model.lora_B.weight]}, {"params": [model.lora_A.weight]}])


def trained(tmp_path: Path, working: bool | None, network: dict) -> tuple[list, dict[str, torch.Tensor], str]:
    """A bf16 run with accumulation, dropout and the text encoder trained: its losses, LoRA file and log."""
    train = {"steps": 4, "dtype": "bf16", "gradient_accumulation": 2, "train_text_encoder": True, "working_copies": working}
    config = write_config(tmp_path, train=train, network={"linear": 4, "linear_alpha": 4, "dropout": 0.2, **network}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    folder = run_dir(tmp_path)
    losses = [(r["step"], r["loss"]) for r in read_losses(folder / "loss.csv")]
    return losses, load_file(folder / "fakerun.safetensors"), (folder / "log.txt").read_text()


@pytest.mark.parametrize("network", [{"type": "lora"}, {"type": "locon", "conv": 2, "conv_alpha": 2},
                                     {"type": "lora", "full_if_contains": ["to_out"]}], ids=["lora", "locon", "full_if_contains"])
def test_training_with_working_copies_equals_autocast(tmp_path: Path, network: dict) -> None:
    on, off = trained(tmp_path / "on", None, network), trained(tmp_path / "off", False, network)
    assert "bf16 working copies" in on[2] and "working copies" not in off[2]
    # stand-ins found for every weight (text encoder too), and every layer reads its weights from its module
    assert "swapped in through .data" not in on[2] and "read past its module" not in on[2]
    assert "the optimizer steps 2 flat tensors" in on[2]  # the UNet's group and the text encoder's
    assert on[0] == off[0]
    assert on[1].keys() == off[1].keys() and all(torch.equal(on[1][k], off[1][k]) for k in on[1])


@pytest.mark.parametrize("kind", ["lokr", "loha", "dora"])
def test_other_adapters_take_working_copies_only_when_asked(tmp_path: Path, kind: str) -> None:
    network = {"type": kind}
    assert "working copies" not in trained(tmp_path / "default", None, network)[2]
    asked = trained(tmp_path / "asked", True, network)[2]
    assert "bf16 working copies" in asked and "through .data" not in asked and "read past its module" not in asked


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


def test_a_state_saved_per_tensor_does_not_resume_with_a_flat_optimizer(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sections = dict(save={"save_every": 2}, **NO_SAMPLES)
    per_tensor = write_config(tmp_path, train={"steps": 4, "dtype": "bf16", "flat_optimizer": False}, **sections)
    monkeypatch.setenv("EASEL_FAKE_SIGNAL_AT", f"3:{int(signal.SIGTERM)}")
    assert run_main([str(per_tensor)]) == 143
    monkeypatch.delenv("EASEL_FAKE_SIGNAL_AT")
    flat = write_config(tmp_path, train={"steps": 4, "dtype": "bf16"}, **sections)
    capsys.readouterr()
    assert run_main([str(flat)]) == 2
    err = capsys.readouterr().err
    assert "with train.flat_optimizer false, which this config does not have; set train.flat_optimizer: false" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("train, message", [
    ({"flat_optimizer": True, "dtype": "bf16", "optimizer": "adafactor"}, "does not suit optimizer 'adafactor'"),
    ({"flat_optimizer": True, "dtype": "fp16"}, "needs train.dtype bf16 with working_copies on"),
    ({"flat_optimizer": True, "dtype": "bf16", "working_copies": False}, "needs train.dtype bf16 with working_copies on"),
    ({"flat_optimizer": True, "dtype": "bf16", "network": "loha"}, "a loha network has only with train.working_copies: true"),
], ids=["adafactor", "fp16", "no working copies", "loha"])
def test_a_flat_optimizer_that_cannot_be_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          train: dict, message: str) -> None:
    network = {"type": train["network"]} if "network" in train else {}
    config = write_config(tmp_path, train={k: v for k, v in train.items() if k != "network"}, network=network, **NO_SAMPLES)
    assert run_main([str(config)]) == 2
    err = capsys.readouterr().err
    assert "train.flat_optimizer" in err and message in err and "line" in err


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
        log = (folder / "output" / "w" / "log.txt").read_text()
        assert "through .data" not in log and "read past its module" not in log
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
        train = {"gradient_checkpointing": True, "dtype": "bf16", "working_copies": working, **memory_options["train"],
                 "flat_optimizer": False}  # an 8-bit state quantized in blocks across tensors is not bit for bit the same
        path = config(tmp_path, f"w{working}", "zimage:turbo", sample=True, model=memory_options["model"], train=train)
        assert run.main([str(path)]) == 0
        files[working], log, losses = run_files(tmp_path, f"w{working}")
        assert ("bf16 working copies" in log) == working and len(losses) == 4
        assert "through .data" not in log and "read past its module" not in log
    torch._dynamo.reset()
    assert all(torch.equal(files[True][k], files[False][k]) for k in files[True])


def test_the_flat_optimizer_is_on_by_default_where_it_is_faster() -> None:
    """On a GPU for every elementwise optimizer; on the CPU only for torch's fused Adam/AdamW (the others' whole-tensor
    passes are slower over one flat tensor there, bench/optimizer_step.py)."""
    from toolkit.train.working import flat_by_default

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert flat_by_default("adamw", cpu) and flat_by_default("adam", cpu) and not flat_by_default("adamw8bit", cpu)
    assert all(flat_by_default(name, cuda) for name in ("adamw", "adamw8bit", "adam8bit", "lion", "lion8bit", "prodigy"))
    assert not flat_by_default("adafactor", cuda) and not flat_by_default("sgd", cuda)


def test_a_weight_that_loses_its_gradient_keeps_its_value_and_is_warned_of(caplog: pytest.LogCaptureFixture,
                                                                           owned: bool) -> None:
    model = Toy()
    params = [model.lora_A.weight, model.lora_B.weight, *model.unused.parameters()]
    working = copies(model, owned, flat=True, params=params)
    [group] = working.optimizer_groups([{"params": params, "lr": 1e-2}])
    optimizer = torch.optim.AdamW(group["params"], lr=1e-2)
    x = torch.ones(2, 16, dtype=torch.bfloat16)
    with working.active():  # the first step reaches the unused layer too
        (loss_of(model, x) + model.unused(torch.ones(1, 2, dtype=torch.bfloat16)).float().sum()).backward()
    working.step(optimizer)
    before = model.unused.weight.detach().clone()
    with working.active():
        loss_of(model, x).backward()
    with caplog.at_level("WARNING"):
        working.step(optimizer)
    assert torch.equal(model.unused.weight, before)
    assert "had a gradient before and none in this step" in caplog.text
