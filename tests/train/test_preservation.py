"""Prior preservation terms: DOP's class prompts, and a loss that is zero for the base model and pulls the
adapter's prediction back towards it."""

from __future__ import annotations

import torch

from tests.train.fakes import FAKE_ARCH, FakeAdapter
from toolkit.config.blocks import ModelConfig, NetworkConfig
from toolkit.network.network import Network
from toolkit.train.preservation import class_prompts, inverted_mask_prior_loss, preservation_loss


def test_class_prompts_replace_the_trigger_as_a_word():
    prompts = class_prompts(["photo of ohwx, smiling", "ohwxman at sea", "OHWX in a hat"], "ohwx", "woman")
    assert prompts == ["photo of woman, smiling", "woman", "woman in a hat"]
    assert class_prompts(["a b"], None, "person") == ["person"]


def _setup():
    adapter = FakeAdapter.load(ModelConfig(name_or_path="fake", arch="fake"), FAKE_ARCH, device="cpu", dtype=torch.float32)
    adapter.denoiser.requires_grad_(False)
    network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=4))
    noisy = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    return adapter, network, noisy, torch.tensor([500.0, 200.0])


def test_preservation_loss_is_zero_for_the_base_model_and_trains_towards_it():
    adapter, network, noisy, timesteps = _setup()
    loss = preservation_loss(adapter, network, noisy, timesteps, ["woman", "woman"], [None, None])
    assert loss.item() == 0.0, "a fresh LoRA (B = 0) predicts what the base model predicts"
    with torch.no_grad():
        for name, param in network.named_parameters():
            if "lora_B" in name:
                param.add_(0.3)
    loss = preservation_loss(adapter, network, noisy, timesteps, ["woman", "woman"], [None, None])
    loss.backward()
    assert loss.item() > 0 and network.enabled
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in network.parameters())
    trained = {id(p) for p in network.parameters()}
    assert all(p.grad is None for p in adapter.denoiser.parameters() if id(p) not in trained)


def test_inverted_mask_prior_looks_only_outside_the_mask():
    prediction, prior = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    prediction[..., 0] = 5.0  # differs only inside the mask: no prior loss
    assert float(inverted_mask_prior_loss(prediction, prior, mask)) == 0.0
    prediction[..., 1] = 1.0
    assert float(inverted_mask_prior_loss(prediction, prior, mask)) == 1.0
