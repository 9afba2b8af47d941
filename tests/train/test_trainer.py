"""The trainer process end to end on the fake architecture, through run.py."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.train.fakes import FAKE_ARCH, FakeAdapter, FakeData
from tests.train.harness import ROOT, run_main, write_config
from toolkit.config.blocks import DatasetConfig, ModelConfig, NetworkConfig
from toolkit.network.network import Network
from toolkit.train.logs import read_losses
from toolkit.train.noise import Objective

NO_SAMPLES = {"sample": None}


def read_lora(path: Path) -> dict[str, torch.Tensor]:
    """A saved LoRA in easel's canonical keys (``transformer.<module>.lora_A.weight`` ...)."""
    from tests.train.harness import fake_registry
    from toolkit.lora_io import load_lora

    return load_lora(path, arch=fake_registry().arch("fake")).state_dict()


def run_dir(tmp_path: Path, name: str = "fakerun") -> Path:
    return tmp_path / "output" / name


def validation_loss(data_folder: Path, lora: Path | None = None) -> float:
    """The flow-matching loss of the fake model (with a LoRA file, or without) on fixed noise and timesteps."""
    adapter = FakeAdapter.load(ModelConfig(name_or_path="tiny:fake", arch="fake"), FAKE_ARCH, device=torch.device("cpu"), dtype=torch.float32)
    if lora is not None:
        from tests.train.harness import fake_registry
        from toolkit.lora_io import load_lora

        network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=4, linear_alpha=4))
        network.load_state_dict(load_lora(lora, arch=fake_registry().arch("fake")).state_dict())
    data = FakeData([DatasetConfig(folder_path=str(data_folder))], trigger_word="sks", batch_size=4, seed=0, bucket_divisibility=4)
    objective = Objective(adapter.noise_schedule(), timestep_type="uniform")
    losses = []
    with torch.no_grad():
        latents = adapter.encode_images(data.pixels)
        cond = adapter.encode_prompts(data.captions)
        for seed in range(16):
            noised = objective.apply(latents, torch.Generator().manual_seed(seed))
            losses.append(torch.mean((adapter.predict(noised.noisy, noised.timesteps, cond) - noised.target) ** 2).item())
    return sum(losses) / len(losses)


def test_a_run_learns_and_writes_its_files(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 60, "batch_size": 4, "lr": 3e-2, "timestep_type": "uniform"},
                          save={"save_every": 25, "max_step_saves_to_keep": 1}, sample={"sample_every": 30})
    assert run_main([str(config)]) == 0
    folder = run_dir(tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.yaml", "fakerun.safetensors", "fakerun_000000050.safetensors", "fakerun_000000050.state.pt",
                     "fakerun_000000060.state.pt", "log.txt", "loss.csv", "loss.png", "samples"]  # step 25 was pruned
    assert sorted(p.name for p in (folder / "samples").iterdir()) == sorted(
        [f"{step:09d}_{i:02d}.png" for step in (0, 30, 60) for i in (0, 1)] + [f"{step:09d}_grid.png" for step in (0, 30, 60)])
    rows = read_losses(folder / "loss.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 61)) and all(r["lr"] == 3e-2 for r in rows)
    before, after = validation_loss(tmp_path / "data"), validation_loss(tmp_path / "data", folder / "fakerun.safetensors")
    assert after < 0.9 * before, (before, after)
    assert sum(r["loss"] for r in rows[-15:]) < sum(r["loss"] for r in rows[:15])
    with safe_open(str(folder / "fakerun.safetensors"), "pt") as handle:
        meta = handle.metadata()
        assert any(key.startswith("diffusion_model.blocks.0.attn.to_q.lora_A") for key in handle.keys())
    assert meta["ss_steps"] == "60" and meta["ss_num_train_images"] == "4" and meta["modelspec.trigger_phrase"] == "sks"
    assert meta["easel.arch"] == "fake"
    assert "fake data: 4 images" in (folder / "log.txt").read_text()


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sections = dict(train={"steps": 6, "gradient_accumulation": 2, "lr_scheduler": "cosine", "lr_warmup_steps": 2,
                           "ema_config": {"use_ema": True, "ema_decay": 0.9}},
                    network={"dropout": 0.2}, sample={"sample_every": 2}, save={"save_every": 4})
    straight = write_config(tmp_path / "straight", **sections)
    assert run_main([str(straight)]) == 0
    resumed = write_config(tmp_path / "resumed", **sections)
    monkeypatch.setenv("EASEL_FAKE_SIGNAL_AT", f"5:{int(signal.SIGTERM)}")  # the first micro-batch of step 3
    assert run_main([str(resumed)]) == 143
    folder = run_dir(tmp_path / "resumed")
    assert len(read_losses(folder / "loss.csv")) == 3  # step 3 was finished, then saved
    assert (folder / "fakerun_000000003.safetensors").is_file() and (folder / "fakerun_000000003.state.pt").is_file()
    assert "Stopped at step 3 of 6 and saved. To continue, run the same command again" in (folder / "log.txt").read_text()
    monkeypatch.delenv("EASEL_FAKE_SIGNAL_AT")
    assert run_main([str(resumed)]) == 0
    expected = [(r["step"], r["loss"], r["lr"]) for r in read_losses(run_dir(tmp_path / "straight") / "loss.csv")]
    assert [(r["step"], r["loss"], r["lr"]) for r in read_losses(folder / "loss.csv")] == expected
    a, b = load_file(run_dir(tmp_path / "straight") / "fakerun.safetensors"), load_file(folder / "fakerun.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for step in (4, 6):
        for index in (0, 1):
            name = f"samples/{step:09d}_{index:02d}.png"
            assert (folder / name).read_bytes() == (run_dir(tmp_path / "straight") / name).read_bytes()


def test_a_finished_run_is_not_trained_again(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 2}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    csv = (run_dir(tmp_path) / "loss.csv").read_text()
    assert run_main([str(config)]) == 0
    assert (run_dir(tmp_path) / "loss.csv").read_text() == csv
    assert "Already trained to step 2 of 2" in (run_dir(tmp_path) / "log.txt").read_text()


def test_sigint_in_a_subprocess_saves_and_exits_130(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 5000}, save={"save_every": 1000}, **NO_SAMPLES)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "tests/train/harness.py"), str(config)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv = run_dir(tmp_path) / "loss.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_losses(csv)) < 3 and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    step = int(read_losses(csv)[-1]["step"])
    assert 3 <= step < 5000
    assert (run_dir(tmp_path) / f"fakerun_{step:09d}.safetensors").is_file()
    assert (run_dir(tmp_path) / f"fakerun_{step:09d}.state.pt").is_file()
    assert f"Stopped at step {step} of 5000 and saved. To continue, run the same command again" in stderr
    assert not list(run_dir(tmp_path).glob(".*.tmp"))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_save(tmp_path: Path) -> None:
    config = write_config(tmp_path, model={"model_kwargs": {"nan_at": 5}}, **NO_SAMPLES)
    assert run_main([str(config)]) == 2
    folder = run_dir(tmp_path)
    assert sorted(p.name for p in folder.glob("fakerun*")) == ["fakerun_000000002.safetensors", "fakerun_000000002.state.pt",
                                                              "fakerun_000000004.safetensors", "fakerun_000000004.state.pt"]
    assert len(read_losses(folder / "loss.csv")) == 4
    text = (folder / "log.txt").read_text()
    assert "the loss became nan at step 5" in text and "the last good save is" in text and "fakerun_000000004.safetensors" in text


def test_only_the_main_process_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    config = write_config(tmp_path, train={"steps": 3}, save={"save_every": 1})
    assert run_main([str(config)]) == 0
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize("kind, suffix", [("lora", "lora_B.weight"), ("locon", "lora_B.weight"), ("dora", "lora_B.weight"),
                                          ("loha", "hada_w2_a"), ("lokr", "lokr_w2")])
def test_every_network_type_trains(tmp_path: Path, kind: str, suffix: str) -> None:
    config = write_config(tmp_path, network={"type": kind, "conv": 2, "conv_alpha": 2}, train={"steps": 2, "lr": 1e-2}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    state = read_lora(run_dir(tmp_path) / "fakerun.safetensors")
    conv = [k for k in state if k.startswith("transformer.blocks.0.conv.")]
    assert conv, sorted(state)[:10]
    changed = [k for k in state if k.endswith(suffix)]
    assert changed and any(state[k].abs().sum() > 0 for k in changed)


def test_text_encoder_training_with_its_own_lr(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 2, "train_text_encoder": True, "unet_lr": 1e-2, "text_encoder_lr": 1e-3},
                          **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    state = read_lora(run_dir(tmp_path) / "fakerun.safetensors")
    encoder = [k for k in state if k.startswith("text_encoder.") and k.endswith("lora_B.weight")]
    assert sorted(k.split(".")[2] for k in encoder) == ["k_proj", "out_proj", "q_proj", "v_proj"]
    assert all(state[k].abs().sum() > 0 for k in encoder)
    unet_step = max(state[k].abs().max() for k in state if k.startswith("transformer.") and k.endswith("lora_B.weight"))
    text_step = max(state[k].abs().max() for k in encoder)
    assert text_step < unet_step / 3  # 10x smaller lr, two Adam steps


def test_an_adapter_that_gets_no_gradient_is_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, model={"model_kwargs": {"text_without_grad": True}},
                          train={"steps": 2, "train_text_encoder": True}, **NO_SAMPLES)
    assert run_main([str(config)]) == 2
    assert "no gradient reached the adapter on text_encoder" in (run_dir(tmp_path) / "log.txt").read_text()


def test_ddpm_v_prediction_with_min_snr_huber_offset_content_and_8bit_adam(tmp_path: Path) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    config = write_config(tmp_path, model={"model_kwargs": {"schedule": "ddpm", "prediction": "v_prediction"}},
                          train={"steps": 3, "min_snr_gamma": 5, "loss_type": "huber", "noise_offset": 0.1,
                                 "content_or_style": "content", "optimizer": "adamw8bit", "timestep_type": "weighted"},
                          sample={"sample_every": 100})
    assert run_main([str(config)]) == 0
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_losses(run_dir(tmp_path) / "loss.csv"))


def test_cached_latents_and_text_with_the_text_encoder_offloaded(tmp_path: Path) -> None:
    config = write_config(tmp_path, datasets=[{"folder_path": str(tmp_path / "data"), "resolution": [64], "cache_latents": True}],
                          train={"steps": 2, "cache_text_embeddings": True, "unload_text_encoder": True})
    assert run_main([str(config)]) == 0
    assert len(list((run_dir(tmp_path) / "samples").glob("*_0?.png"))) == 4


def test_epochs_set_the_step_count(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": None, "epochs": 3, "batch_size": 2, "gradient_accumulation": 2}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    assert len(read_losses(run_dir(tmp_path) / "loss.csv")) == 3  # 4 images / batch 2 = 2 batches per epoch; 2 per step


def test_pretrained_lora_is_the_starting_point(tmp_path: Path) -> None:
    first = write_config(tmp_path, name="first", train={"steps": 3}, **NO_SAMPLES)
    assert run_main([str(first)]) == 0
    start = run_dir(tmp_path, "first") / "first.safetensors"
    second = write_config(tmp_path, name="second", train={"steps": 1, "lr": 1e-12, "optimizer": "sgd"},
                          network={"pretrained_lora_path": str(start)}, **NO_SAMPLES)
    assert run_main([str(second)]) == 0
    a, b = load_file(start), load_file(run_dir(tmp_path, "second") / "second.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-9) for k in a)
    wrong = write_config(tmp_path, name="third", network={"linear": 8, "pretrained_lora_path": str(start)}, **NO_SAMPLES)
    assert run_main([str(wrong)]) == 2
    assert "of another shape" in (run_dir(tmp_path, "third") / "log.txt").read_text()


def test_preview_seeds_and_per_prompt_multiplier(tmp_path: Path) -> None:
    config = write_config(tmp_path, train={"steps": 10, "lr": 5e-2}, sample={
        "sample_every": 100, "walk_seed": False, "prompts": ["same", "same"],
        "samples": [{"prompt": "same", "network_multiplier": 0.0}, {"prompt": "same", "seed": 11}]})
    assert run_main([str(config)]) == 0
    samples = run_dir(tmp_path) / "samples"
    read = {name: (samples / name).read_bytes() for name in os.listdir(samples)}
    assert read["000000000_00.png"] == read["000000000_01.png"] == read["000000000_02.png"]  # one seed, untrained
    assert read["000000000_03.png"] != read["000000000_00.png"]  # its own seed
    assert read["000000010_02.png"] == read["000000000_02.png"]  # multiplier 0: the base model
    assert read["000000010_00.png"] != read["000000000_00.png"]  # the trained network changes the image


def test_wandb_missing_is_a_clear_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    config = write_config(tmp_path, logging={"use_wandb": True}, train={"steps": 1}, **NO_SAMPLES)
    assert run_main([str(config)]) == 2
    assert "pip install wandb" in (run_dir(tmp_path) / "log.txt").read_text()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_the_adapter_in_float32(tmp_path: Path, precision: str) -> None:
    config = write_config(tmp_path, train={"steps": 2, "dtype": precision}, save={"dtype": precision, "save_every": 1},
                          sample={"sample_every": 100})
    assert run_main([str(config)]) == 0
    state = torch.load(run_dir(tmp_path) / "fakerun_000000002.state.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["network"].values())
    saved = read_lora(run_dir(tmp_path) / "fakerun.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_losses(run_dir(tmp_path) / "loss.csv"))
    warned = "fp16 on cpu runs without autocast and loss scaling" in (run_dir(tmp_path) / "log.txt").read_text()
    assert warned == (precision == "fp16")


def test_two_configs_with_different_precisions_in_one_command(tmp_path: Path) -> None:
    first = write_config(tmp_path, name="first", train={"steps": 1, "dtype": "bf16"}, **NO_SAMPLES)
    second = write_config(tmp_path, name="second", train={"steps": 1, "dtype": "fp32", "gradient_accumulation": 2}, **NO_SAMPLES)
    assert run_main([str(first), str(second)]) == 0
    assert (run_dir(tmp_path, "first") / "first.safetensors").is_file() and (run_dir(tmp_path, "second") / "second.safetensors").is_file()


def test_tensorboard_gets_every_step_of_a_run(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path, logging={"log_dir": str(tmp_path / "tb")}, train={"disable_sampling": True})
    assert run_main([str(config)]) == 0
    (events,) = (tmp_path / "tb").glob("*/events.out.tfevents.*")
    scalars = EventAccumulator(str(events.parent)).Reload()
    losses = read_losses(run_dir(tmp_path) / "loss.csv")
    assert [(e.step, round(e.value, 5)) for e in scalars.Scalars("loss")] == [(r["step"], round(r["loss"], 5)) for r in losses]
    assert [e.step for e in scalars.Scalars("lr")] == list(range(1, 7))


def test_the_adapter_starts_the_same_however_much_loading_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a tiny model (or reading it from its cache) and filling caches draw different amounts of random
    numbers; the adapter's initial weights, and so the run, must not depend on that."""
    from tests.train.fakes import FakeAdapter

    plain = write_config(tmp_path / "plain", train={"steps": 2}, **NO_SAMPLES)
    assert run_main([str(plain)]) == 0
    original = FakeAdapter.load.__func__

    def drawing(cls, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        adapter = original(cls, *args, **kwargs)
        torch.rand(7)  # as building random weights would
        return adapter

    monkeypatch.setattr(FakeAdapter, "load", classmethod(drawing))
    drawn = write_config(tmp_path / "drawn", train={"steps": 2}, **NO_SAMPLES)
    assert run_main([str(drawn)]) == 0
    a, b = (load_file(run_dir(tmp_path / name) / "fakerun.safetensors") for name in ("plain", "drawn"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpointing_interval_the_model_cannot_take_is_a_warning(tmp_path: Path) -> None:
    """The fake denoiser's switch takes no checkpointing function (diffusers' does): every block is checkpointed."""
    config = write_config(tmp_path, train={"steps": 1, "gradient_checkpointing_interval": 2}, **NO_SAMPLES)
    assert run_main([str(config)]) == 0
    assert "gradient_checkpointing_interval 2 does not apply" in (run_dir(tmp_path) / "log.txt").read_text()
