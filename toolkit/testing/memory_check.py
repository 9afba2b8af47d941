"""A check of the memory options for any architecture's tiny model: an 8-bit base loaded block by block with half
its blocks streamed from CPU memory trains exactly as the 8-bit base kept whole (used by the architectures' tests)."""

from __future__ import annotations

from typing import Any


def assert_streamed_8bit_trains_alike(registry: Any, arch: str, kept: str, quantized: str) -> None:
    """``tiny:<arch>`` with ``quantize`` (qint8) and with ``quantize`` + ``low_vram`` + ``layer_offloading`` 0.5: the same
    prediction and LoRA gradients; ``kept`` (a denoiser module path) stays in full precision, ``quantized`` does not."""
    import torch

    from toolkit.config.blocks import ModelConfig, NetworkConfig
    from toolkit.models import memory
    from toolkit.models.loading import load_adapter
    from toolkit.network.network import Network
    from toolkit.quantize import is_quantized

    def load(**options: Any) -> Any:
        config = ModelConfig(name_or_path=f"tiny:{arch}", arch=arch, quantize=True, qtype="qint8", **options)
        return load_adapter(config, registry, device="cpu")

    results = []
    for adapter in (load(), load(low_vram=True, layer_offloading=True, layer_offloading_fraction=0.5)):
        denoiser = adapter.denoiser
        assert not is_quantized(denoiser.get_submodule(kept).weight) and is_quantized(denoiser.get_submodule(quantized).weight)
        torch.manual_seed(0)
        network = Network.build(adapter.components(), adapter.lora_targets(False), NetworkConfig(linear=4), name="check")
        with torch.no_grad():
            for param in network.parameters():
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 0.1)
        memory.place_denoiser(adapter)
        latents = torch.randn(1, *_latent_shape(adapter), generator=torch.Generator().manual_seed(1))
        cond = adapter.encode_prompts(["a cat"])
        out = adapter.predict(latents, torch.tensor([500.0]), cond)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in network.parameters()], memory.offloaded(denoiser)))
        network.remove()
    (plain, plain_grads, none), (streamed, grads, blocks) = results
    assert not none and blocks, "only the second one streams blocks"
    assert torch.allclose(plain, streamed, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, grads))


def _latent_shape(adapter: Any) -> tuple[int, int, int]:
    import torch

    with torch.no_grad():
        return tuple(adapter.encode_images(torch.zeros(1, 3, 32, 48)).shape[1:])
