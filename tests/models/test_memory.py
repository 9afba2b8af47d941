"""toolkit.models.memory / offload: block finding, low_vram parking, layer offloading, compile, SDPA.

On this CPU-only machine the "device" and the CPU are the same memory, so these tests check what the
mechanisms do (which tensors a module points at, when copies happen, that results and gradients are
unchanged); the memory they save on a GPU is measured by bench/gpu_train.py.
"""

from __future__ import annotations

import logging

import copy
from typing import Any

import pytest
import torch
from torch import nn

from toolkit.config.blocks import ModelConfig, NetworkConfig
from toolkit.models import memory
from toolkit.models.loading import load_adapter
from toolkit.models.offload import offloader_of, spread
from toolkit.network.network import Network

torch.set_num_threads(1)


def load(registry: Any, arch: str = "zimage", **fields: Any) -> Any:
    return load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch, **fields), registry, device="cpu")


def inputs(adapter: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, adapter.denoiser.config.in_channels, 8, 8, generator=generator)
    with torch.no_grad():
        cond = adapter.encode_prompts(["a red square", "a blue circle"])
    return latents, torch.tensor([700.0, 200.0]), cond


def with_lora(adapter: Any, seed: int = 5) -> Network:
    network = Network.build(adapter.components(), {adapter.denoiser_name: adapter.lora_targets(False)[adapter.denoiser_name]},
                            NetworkConfig(type="lora", linear=4, linear_alpha=4))
    network.float()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return network


def step(adapter: Any, network: Network) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward and backward; the prediction and the adapter's gradients."""
    latents, timesteps, cond = inputs(adapter)
    prediction = adapter.predict(latents, timesteps, cond)
    prediction.float().pow(2).mean().backward()
    grads = {name: param.grad.clone() for name, param in network.named_parameters()}
    network.zero_grad()
    return prediction.detach(), grads


@pytest.mark.parametrize("arch", ["zimage", "sd15", "sdxl"])
def test_units_hold_every_parameter_and_blocks_are_the_lists(arch: str, registry: Any) -> None:
    adapter = load(registry, arch)
    for module in [adapter.denoiser, *adapter.text_encoders.values()]:
        pieces = memory.units(module)
        covered = {id(p) for _, unit in pieces for p in unit.parameters()}
        own = {id(p) for p in module.parameters()} - covered
        assert len(pieces) > 2 and all(not isinstance(unit, nn.ModuleList) for _, unit in pieces)
        assert all(p is getattr(module.get_submodule(path.rpartition(".")[0]), path.rpartition(".")[2])
                   for path, p in pieces)
        assert sum(p.numel() for p in module.parameters() if id(p) in own) < 0.01 * sum(p.numel() for p in module.parameters())
    names = [name for name, _ in memory.blocks(adapter.denoiser)]
    expected = {"zimage": ["noise_refiner.0", "context_refiner.0", "layers.0", "layers.1"],
                "sd15": ["down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3",
                         "up_blocks.0", "up_blocks.1", "up_blocks.2", "up_blocks.3"],
                "sdxl": ["down_blocks.0", "down_blocks.1", "down_blocks.2", "up_blocks.0", "up_blocks.1", "up_blocks.2"]}
    assert names == expected[arch]


def test_spread_picks_the_fraction_evenly() -> None:
    assert spread(30, 1.0) == list(range(30))
    assert spread(30, 0.0) == []
    assert spread(4, 0.5) == [1, 3]
    assert spread(30, 0.5) == list(range(1, 30, 2))
    assert len(spread(30, 0.3)) == 9


def test_low_vram_parks_the_denoiser_until_first_use(registry: Any) -> None:
    adapter = load(registry, "sdxl", low_vram=True, quantize=True, qtype="qint8")
    state = memory._DEFERRED[adapter.denoiser]
    assert not state.placed and state.hook is not None and state.offload_fraction is None
    assert adapter.denoiser._forward_pre_hooks
    latents, timesteps, cond = inputs(adapter)
    with torch.no_grad():
        adapter.predict(latents, timesteps, cond)
    assert state.placed and not adapter.denoiser._forward_pre_hooks
    memory.place_denoiser(adapter)  # a second call does nothing
    plain = load(registry, "sdxl")
    assert adapter.denoiser not in memory._DEFERRED or memory._DEFERRED[adapter.denoiser] is state
    assert plain.denoiser not in memory._DEFERRED


@pytest.mark.parametrize("quantized", [False, True])
def test_layer_offloading_gives_the_same_results_and_streams_blocks(quantized: bool, registry: Any) -> None:
    """Offloaded blocks: same predictions and LoRA gradients; after a step every block points at its CPU home again."""
    extra: dict[str, Any] = {"quantize": True, "qtype": "qint8"} if quantized else {}
    reference = load(registry, **extra)
    offloaded = load(registry, layer_offloading=True, layer_offloading_fraction=0.5, **extra)
    for adapter in (reference, offloaded):
        adapter.denoiser.enable_gradient_checkpointing()
        adapter.denoiser.train()
    reference_net, offloaded_net = with_lora(reference), with_lora(offloaded)
    memory.place_denoiser(offloaded)
    offloader = memory._DEFERRED[offloaded.denoiser].offloader
    assert offloader is not None and memory.offloaded(offloaded.denoiser) == offloader.blocks
    names = {id(block): name for name, block in memory.blocks(offloaded.denoiser)}
    assert [names[id(block)] for block in offloader.blocks] == ["context_refiner.0", "layers.1"]
    homes = {(id(m), n): t.data_ptr() for block in offloader.blocks for m in block.modules()
             for n, t in m._parameters.items() if t is not None and not t.requires_grad}
    seen: list[int] = []
    for block in offloader.blocks:
        block.register_forward_hook(lambda *_: seen.append(len(offloader.onloaded)))
    for _ in range(2):
        expected, expected_grads = step(reference, reference_net)
        got, grads = step(offloaded, offloaded_net)
        assert torch.equal(got, expected)
        assert grads.keys() == expected_grads.keys()
        assert all(torch.allclose(grads[name], expected_grads[name], atol=1e-6) for name in grads)
    # step 1: both blocks copied in the forward, the first again when the backward pass recomputes it (the last
    # one is still there); step 2: the first block is still there from that backward, so only 2 more copies
    assert offloader.copies == 3 + 2 and offloader.order_known
    assert seen and max(seen) == 1
    offloader.offload_all()
    now = {(id(m), n): t.data_ptr() for block in offloader.blocks for m in block.modules()
           for n, t in m._parameters.items() if t is not None and not t.requires_grad}
    assert now == homes


def test_offloaded_blocks_keep_trainable_parameters_in_place(registry: Any) -> None:
    adapter = load(registry, layer_offloading=True, layer_offloading_fraction=1.0)
    network = with_lora(adapter)
    params = {name: param for name, param in network.named_parameters()}
    memory.place_denoiser(adapter)
    offloader = memory._DEFERRED[adapter.denoiser].offloader
    assert offloader is not None and len(offloader.blocks) == 4
    step(adapter, network)
    assert {name: param for name, param in network.named_parameters()} == params
    assert all(param.grad is None for param in params.values())


@pytest.mark.parametrize("arch, quantized", [("zimage", False), ("sdxl", True)])
def test_text_encoder_layers_stream_while_they_encode_and_go_home_after(arch: str, quantized: bool, registry: Any) -> None:
    """``layer_offloading`` with the text fraction 1 and the denoiser's 0: the encoders' layers live in CPU memory, are
    copied in one by one while they encode (the same embeddings) and all go home afterwards; moving an encoder leaves
    them at home."""
    extra: dict[str, Any] = {"quantize_te": True, "qtype_te": "qint8"} if quantized else {}
    reference = load(registry, arch, **extra)
    streamed = load(registry, arch, layer_offloading=True, layer_offloading_fraction=0.0,
                    layer_offloading_text_encoder_fraction=1.0, **extra)
    offloaders = {name: offloader_of(encoder) for name, encoder in streamed.text_encoders.items()}
    for name, encoder in streamed.text_encoders.items():
        layers = [block for _, block in memory.layer_blocks(encoder)]
        assert len(layers) == 2 and offloaders[name].blocks == layers
    with torch.no_grad():
        expected = reference.encode_prompts(["a red square", "a blue circle"])
        got = streamed.encode_prompts(["a red square", "a blue circle"])
    assert expected.keys() == got.keys() and all(torch.equal(got[key], expected[key]) for key in got)
    assert all(offloader.copies >= 2 and not offloader.onloaded for offloader in offloaders.values())

    encoder = next(iter(streamed.text_encoders.values()))
    streamed.move([next(iter(streamed.text_encoders))], "meta")  # a device the test can tell from the CPU
    layers = {id(p) for block in offloaders[next(iter(offloaders))].blocks for p in block.parameters()}
    devices = {(id(p) in layers, p.device.type) for p in encoder.parameters()}
    assert devices == {(True, "cpu"), (False, "meta")}
    assert "of the text encoders' layers streamed while they encode" in memory.describe(streamed.config)


def assert_trains_like_eager(eager: Any, eager_net: Network, compiled: Any, compiled_net: Network) -> None:
    """The compiled model's prediction and adapter gradients equal the eager one's, through Dynamo's graphs."""
    import torch._dynamo

    expected, expected_grads = step(eager, eager_net)
    got, grads = step(compiled, compiled_net)
    assert torch.allclose(got, expected, atol=1e-5)
    assert all(torch.allclose(grads[name], expected_grads[name], atol=1e-5) for name in grads)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    torch._dynamo.reset()


def test_compiled_blocks_train_like_eager_ones(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")  # Dynamo's tracing, without code generation (fast)
    eager, compiled = load(registry), load(registry)
    eager_net, compiled_net = with_lora(eager), with_lora(compiled)
    torch._dynamo.reset()
    skip = [compiled.denoiser.layers[1]]
    assert memory.compile_blocks(compiled.compile_units(), skip=skip) == 3
    assert compiled.denoiser.layers[0]._compiled_call_impl is not None
    assert compiled.denoiser.layers[1]._compiled_call_impl is None
    assert_trains_like_eager(eager, eager_net, compiled, compiled_net)


def test_unet_compiles_its_resnets_and_transformer_blocks_and_trains_like_eager(registry: Any,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")
    eager, compiled = load(registry, "sdxl"), load(registry, "sdxl")
    eager_net, compiled_net = with_lora(eager), with_lora(compiled)
    units = compiled.compile_units()
    kinds = {type(unit) for unit in units}
    assert kinds == {ResnetBlock2D, BasicTransformerBlock}
    assert any(unit in set(compiled.denoiser.mid_block.modules()) for unit in units)  # not only the down/up lists
    torch._dynamo.reset()
    offloaded = compiled.denoiser.down_blocks[1]
    inside = [unit for unit in units if unit in set(offloaded.modules())]
    assert inside and memory.compile_blocks(units, skip=[offloaded]) == len(units) - len(inside)
    assert all(unit._compiled_call_impl is None for unit in inside)
    compiled.denoiser.enable_gradient_checkpointing()
    eager.denoiser.enable_gradient_checkpointing()
    assert_trains_like_eager(eager, eager_net, compiled, compiled_net)


@pytest.mark.parametrize("constant_floats", [True, False], ids=["training", "generation"])
def test_compiled_blocks_take_float_attributes_as_constants_in_training(registry: Any, monkeypatch: pytest.MonkeyPatch,
                                                                        constant_floats: bool) -> None:
    """The trainer compiles norm eps, dropout p and scale factors in, not passed as float64 CPU tensors made on every
    call (host work per block call, and CPU inputs CUDA graphs partition around). Generation keeps them as inputs, so
    a LoRA at another weight runs the same graphs."""
    import torch._dynamo
    import torch._dynamo.config

    inputs_seen: list[torch.Tensor] = []

    def recording(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        inputs_seen.extend(value for value in example_inputs if isinstance(value, torch.Tensor))
        return graph.forward

    monkeypatch.setattr(memory, "COMPILE_BACKEND", recording)
    adapter = load(registry, "sdxl")
    network = with_lora(adapter)
    torch._dynamo.reset()
    stats = torch._dynamo.utils.counters["stats"]
    with torch._dynamo.config.patch(specialize_float=False):  # compile_blocks sets it; the patch puts it back
        memory.compile_blocks(adapter.compile_units(), constant_floats=constant_floats)
        step(adapter, network)
        graphs = stats["unique_graphs"]
        network.multiplier = 0.5  # a preview's network_multiplier, or the LoRA's weight in a generate request
        step(adapter, network)
    torch._dynamo.reset()
    scalars = [value for value in inputs_seen if value.dim() == 0 and value.dtype == torch.float64]
    assert inputs_seen and bool(scalars) is not constant_floats
    assert (stats["unique_graphs"] > graphs) is constant_floats  # in training another weight compiles once more


def test_compile_allows_a_graph_per_unit_shape(registry: Any, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """SDXL's resnets come in 13 shapes, over Dynamo's default of 8 graphs per function: past the limit they would
    run uncompiled (seen on an H100). The tiny UNet has fewer, so the limit is lowered to show the same."""
    import torch._dynamo
    import torch._dynamo.config

    monkeypatch.setattr(memory, "COMPILE_BACKEND", "eager")
    adapter = load(registry, "sdxl")
    network = with_lora(adapter)
    torch._dynamo.reset()
    # config.patch, not monkeypatch: undoing a monkeypatch deletes a Dynamo config entry
    with torch._dynamo.config.patch(recompile_limit=1, accumulated_recompile_limit=1):
        memory.compile_blocks(adapter.compile_units())
        assert torch._dynamo.config.recompile_limit >= 4 * 2  # tiny SDXL: resnets of two shapes or more
        with caplog.at_level(logging.WARNING, logger="torch._dynamo"):
            step(adapter, network)
    assert not [record for record in caplog.records if "recompile_limit" in record.getMessage()]
    torch._dynamo.reset()


def test_compile_mode_reaches_torch_compile_and_cuda_graphs_mark_their_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: calls.append(kwargs))
    units = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    assert memory.compile_blocks(units, mode="reduce-overhead") == 2
    assert memory.compile_blocks(units[:1]) == 1
    assert [call["mode"] for call in calls] == ["reduce-overhead", "reduce-overhead", None]
    assert all(call["dynamic"] and not call["fullgraph"] for call in calls)
    assert memory.uses_cuda_graphs("reduce-overhead", torch.device("cuda"))
    assert memory.uses_cuda_graphs("max-autotune", torch.device("cuda"))
    assert not memory.uses_cuda_graphs("max-autotune-no-cudagraphs", torch.device("cuda"))
    assert not memory.uses_cuda_graphs("reduce-overhead", torch.device("cpu"))


def test_compile_without_triton_on_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils._triton

    from toolkit.errors import EaselError

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    with pytest.raises(EaselError, match=r"train.compile: .*needs Triton.*pip install triton.*train.compile: false"):
        memory.check_compile(torch.device("cuda"))
    memory.check_compile(torch.device("cpu"))  # inductor writes C++ for the CPU: no Triton needed
    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: True)
    memory.check_compile(torch.device("cuda"))


@pytest.mark.parametrize("arch", ["zimage", "sd15", "sdxl"])
def test_attention_runs_through_sdpa(arch: str, registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every architecture's attention calls torch's scaled_dot_product_attention (flash / memory-efficient kernels on GPU)."""
    adapter = load(registry, arch)
    latents, timesteps, cond = inputs(adapter)
    calls: list[int] = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        adapter.predict(latents, timesteps, cond)
    attention_layers = sum(1 for name, _ in adapter.denoiser.named_modules() if name.endswith(("attn1", "attn2", "attention")))
    assert len(calls) == attention_layers > 0


def test_quantize_by_units_parks_each_unit(registry: Any) -> None:
    """low_vram quantization visits one unit at a time and leaves each where ``park`` says."""
    adapter = load(registry, "sd15")
    module = copy.deepcopy(adapter.denoiser)
    visited: list[str] = []
    real = memory.quantize_module

    def recording(holder: nn.Module, *args: Any, **kwargs: Any) -> Any:
        visited.append(kwargs["prefix"] + "." + next(name for name, _ in holder.named_children()))
        return real(holder, *args, **kwargs)

    original = memory.quantize_module
    memory.quantize_module = recording  # type: ignore[assignment]
    try:
        report = memory.quantize_by_units(module, "qint8", adapter.quantize_exclusions, torch.device("cpu"), park="cpu")
    finally:
        memory.quantize_module = original  # type: ignore[assignment]
    assert [path.lstrip(".") for path in visited] == [path for path, _ in memory.units(adapter.denoiser)]
    assert report.quantized > 100 and report.kept == 2 + 2 * 11  # time_embedding's two, and time_emb_proj of each resnet


def test_an_adapter_that_skips_placement_cannot_ignore_the_memory_options(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.errors import EaselError

    monkeypatch.setattr(memory, "settle", lambda adapter: None)  # an architecture loading its model its own way
    with pytest.raises(EaselError, match=r"model: denoiser quantized to qint8 requested, but architecture 'sd15'.*ignored"):
        load(registry, "sd15", quantize=True, qtype="qint8")
    load(registry, "sd15")  # without memory options nothing is required
