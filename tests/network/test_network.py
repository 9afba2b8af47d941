"""Network: which layers each adapter type wraps, ranks and alphas, filters, multiplier, state dicts."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.train.fakes import FakeDenoiser, FakeTextEncoder
from toolkit.config.blocks import NetworkConfig
from toolkit.errors import EaselError
from toolkit.network.network import Network

TYPES = ["lora", "locon", "dora", "loha", "lokr"]
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


def model() -> FakeDenoiser:
    torch.manual_seed(0)
    return FakeDenoiser().eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(2, 4, 4, 4, generator=generator), torch.tensor([500.0, 100.0]),
            torch.randn(2, 8, 16, generator=generator))


def build(denoiser: torch.nn.Module, targets: list[str], name: str = "easel", **config: object) -> Network:
    return Network.build({"transformer": denoiser}, {"transformer": targets}, NetworkConfig(**config), name=name)


def randomize(network: Network, seed: int = 2) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(param + 0.2 * torch.randn(param.shape, generator=generator))


def wrapped(network: Network) -> set[str]:
    return {key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0] for key in network.state_dict()}


def test_lora_wraps_linear_and_1x1_conv_but_not_3x3_without_conv_rank() -> None:
    network = build(model(), [*ATTENTION, "proj_in", "conv"], type="lora", linear=4, linear_alpha=2)
    layers = {key.removesuffix(".lora_A.weight") for key in network.state_dict() if key.endswith("lora_A.weight")}
    expected = {f"transformer.blocks.{b}.{name}" for b in (0, 1) for name in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "proj_in")}
    assert layers == expected
    state = network.state_dict()
    assert state["transformer.blocks.0.attn.to_k.lora_A.weight"].shape == (4, 16)
    assert state["transformer.blocks.0.proj_in.lora_A.weight"].shape == (4, 16, 1, 1)
    assert state["transformer.blocks.0.attn.to_q.alpha"].shape == () and float(state["transformer.blocks.0.attn.to_q.alpha"]) == 2.0


@pytest.mark.parametrize("kind", ["lora", "locon"])
def test_conv_rank_wraps_3x3_convs_with_their_own_rank_and_alpha(kind: str) -> None:
    network = build(model(), ["proj_in", "conv", "conv_in"], type=kind, linear=4, linear_alpha=4, conv=2, conv_alpha=1)
    state = network.state_dict()
    assert state["transformer.blocks.1.conv.lora_A.weight"].shape == (2, 16, 3, 3)
    assert state["transformer.blocks.1.conv.lora_B.weight"].shape == (16, 2, 1, 1)
    assert float(state["transformer.blocks.1.conv.alpha"]) == 1.0
    assert state["transformer.conv_in.lora_A.weight"].shape == (2, 4, 3, 3)
    assert state["transformer.blocks.1.proj_in.lora_A.weight"].shape == (4, 16, 1, 1)
    assert float(state["transformer.blocks.1.proj_in.alpha"]) == 4.0
    layer = network.layers["transformer/blocks/1/conv"].layer  # type: ignore[union-attr]
    assert layer.scaling["easel"] == pytest.approx(0.5)


def test_filters_apply_to_component_qualified_names() -> None:
    ignored = build(model(), ATTENTION, ignore_if_contains=["blocks.1", "to_v"])
    assert wrapped(ignored) == {f"transformer.blocks.0.attn.{n}" for n in ("to_q", "to_k", "to_out.0")}
    only = build(model(), [*ATTENTION, "proj_in"], only_if_contains=["transformer.blocks.1.attn"])
    assert wrapped(only) == {f"transformer.blocks.1.attn.{n}" for n in ("to_q", "to_k", "to_v", "to_out.0")}


def test_a_container_target_stands_for_its_layers() -> None:
    network = build(model(), ["blocks.0.attn"])
    assert wrapped(network) == {f"transformer.blocks.0.attn.{n}" for n in ("to_q", "to_k", "to_v", "to_out.0")}


def test_unknown_target_names_are_an_error_with_examples() -> None:
    with pytest.raises(EaselError, match=r"to_qq.*match no module.*blocks\.0\.proj_in"):
        build(model(), ["to_q", "to_qq"])


def test_nothing_left_to_wrap_is_an_error() -> None:
    with pytest.raises(EaselError, match="wraps no layer"):
        build(model(), ["conv"])  # only 3x3 convs, and no conv rank


@pytest.mark.parametrize("kind", TYPES)
def test_multiplier_scales_the_update_and_zero_is_the_base_model(kind: str) -> None:
    denoiser = model()
    x = inputs()
    with torch.no_grad():
        base = denoiser(*x)
        network = build(denoiser, [*ATTENTION, "proj_in", "conv"], type=kind, linear=4, linear_alpha=2, conv=2)
        randomize(network)
        full = denoiser(*x)
        assert not torch.allclose(full, base, atol=1e-4)
        network.multiplier = 0.0
        assert torch.allclose(denoiser(*x), base, atol=1e-6)
        network.multiplier = 1.0
        network.disable()
        assert torch.allclose(denoiser(*x), base, atol=1e-6)
        network.enable()
        assert torch.allclose(denoiser(*x), full, atol=1e-6)
        with network.scaled(0.0):
            assert torch.allclose(denoiser(*x), base, atol=1e-6)
        assert network.multiplier == 1.0


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("path", ["conv_in", "blocks.0.attn.to_q"])
def test_a_layer_interpolates_linearly_in_the_multiplier(kind: str, path: str) -> None:
    denoiser = model()
    network = build(denoiser, [path], type=kind, linear=4, conv=2, conv_alpha=1)
    randomize(network)
    layer = denoiser.get_submodule(path)  # as wrapped; its input does not depend on the network
    outputs: list[torch.Tensor] = []
    layer.register_forward_hook(lambda _module, _args, out: outputs.append(out))

    def run(multiplier: float) -> torch.Tensor:
        network.multiplier = multiplier
        with torch.no_grad():
            denoiser(*inputs())
        return outputs[-1]

    zero, half, full = run(0.0), run(0.5), run(1.0)
    assert not torch.allclose(zero, full, atol=1e-4)
    assert torch.allclose(half, (zero + full) / 2, atol=1e-5)


@pytest.mark.parametrize("kind, factor, suffixes", [
    ("lora", -1, {"lora_A.weight", "lora_B.weight", "alpha"}),
    ("dora", -1, {"lora_A.weight", "lora_B.weight", "alpha", "dora_scale"}),
    ("loha", -1, {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}),
    ("lokr", 2, {"lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha"}),
    ("lokr", 4, {"lokr_w1", "lokr_w2", "alpha"}),  # rank 2 is full for 4x4 Kronecker factors
])
def test_state_dict_round_trip(kind: str, factor: int, suffixes: set[str]) -> None:
    first = model()
    network = build(first, ["to_q", "to_out.0", "ff.0"], type=kind, linear=2, linear_alpha=1, lokr_factor=factor)
    randomize(network)
    state = network.state_dict()
    assert {key.split("blocks.0.attn.to_q.", 1)[1] for key in state if key.startswith("transformer.blocks.0.attn.to_q.")} == suffixes
    if kind == "dora":
        assert state["transformer.blocks.0.attn.to_q.dora_scale"].shape == (16, 1)
    second = model()
    other = build(second, ["to_q", "to_out.0", "ff.0"], type=kind, linear=2, linear_alpha=1, lokr_factor=factor)
    other.load_state_dict(state)
    x = inputs()
    with torch.no_grad():
        assert torch.equal(first(*x), second(*x))
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())


def test_loaded_alpha_sets_the_scale() -> None:
    first, second = model(), model()
    network = build(first, ["to_q"], linear=4, linear_alpha=4)
    randomize(network)
    state = network.state_dict()
    for key in [k for k in state if k.endswith(".alpha")]:
        state[key] = torch.tensor(2.0)
    other = build(second, ["to_q"], linear=4, linear_alpha=4)
    other.load_state_dict(state)
    x = inputs()
    with torch.no_grad():
        network.multiplier = 0.5  # alpha 2 on rank 4 is half the update of alpha 4
        assert torch.allclose(first(*x), second(*x), atol=1e-6)


def test_strict_load_lists_unknown_missing_and_misshapen_keys() -> None:
    network = build(model(), ["to_q"], linear=4)
    state = network.state_dict()
    with pytest.raises(EaselError, match=r"1 unknown: transformer\.nothing\.lora_A\.weight"):
        network.load_state_dict({**state, "transformer.nothing.lora_A.weight": torch.zeros(1)})
    missing = dict(state)
    del missing["transformer.blocks.1.attn.to_q.alpha"]
    with pytest.raises(EaselError, match=r"1 missing: transformer\.blocks\.1\.attn\.to_q\.alpha"):
        network.load_state_dict(missing)
    wrong = {**state, "transformer.blocks.0.attn.to_q.lora_A.weight": torch.zeros(8, 16)}
    with pytest.raises(EaselError, match=r"of another shape: .*\(file \(8, 16\), network \(4, 16\)\)"):
        network.load_state_dict(wrong)


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_dropout_is_random_in_training_and_off_in_eval(kind: str) -> None:
    denoiser = model()
    network = build(denoiser, ATTENTION, type=kind, linear=4, dropout=0.5)
    randomize(network)
    x = inputs()
    with torch.no_grad():
        denoiser.train()
        assert not torch.allclose(denoiser(*x), denoiser(*x))
        denoiser.eval()
        assert torch.equal(denoiser(*x), denoiser(*x))


def test_param_groups_per_component_hold_only_adapter_parameters() -> None:
    denoiser, encoder = model(), FakeTextEncoder()
    network = Network.build({"transformer": denoiser, "text_encoder": encoder},
                            {"transformer": ATTENTION, "text_encoder": ["q_proj", "v_proj"]}, NetworkConfig(linear=4))
    groups = network.param_groups({"transformer": 1e-3, "text_encoder": 1e-5}, 1e-2)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("transformer", 1e-3, 16), ("text_encoder", 1e-5, 4)]
    assert network.components == ["transformer", "text_encoder"]
    adapter_ids = {id(p) for g in groups for p in g["params"]}
    assert adapter_ids == {id(p) for p in network.parameters()}
    assert all(p.requires_grad for p in network.parameters())
    base = [p for p in [*denoiser.parameters(), *encoder.parameters()] if id(p) not in adapter_ids]
    assert base and all(p.requires_grad for p in base)  # wrapping leaves the base's flags alone; the trainer freezes it


@pytest.mark.parametrize("second_kind", ["lora", "lokr"])
def test_two_networks_coexist_and_their_updates_add(second_kind: str) -> None:
    denoiser = model()
    path = "blocks.0.attn.to_q"  # both wrap it; its input does not depend on either network
    first = build(denoiser, [path], name="first", linear=4)
    randomize(first, 3)
    second = build(denoiser, [path, "to_k"], name="second", type=second_kind, linear=2)
    randomize(second, 4)
    outputs: list[torch.Tensor] = []
    denoiser.get_submodule(path).register_forward_hook(lambda _module, _args, out: outputs.append(out))

    def run() -> torch.Tensor:
        with torch.no_grad():
            denoiser(*inputs())
        return outputs[-1]

    both = run()
    second.disable()
    only_first = run()
    first.disable()
    base = run()
    second.enable()
    only_second = run()
    first.enable()
    assert torch.allclose(both - base, (only_first - base) + (only_second - base), atol=1e-5)
    assert not torch.allclose(only_first, base, atol=1e-4) and not torch.allclose(only_second, base, atol=1e-4)
    with pytest.raises(EaselError, match="already on"):
        build(denoiser, ["to_q"], name="first")
    second.remove()
    assert torch.allclose(run(), only_first, atol=1e-6)


def test_remove_restores_the_plain_layers() -> None:
    denoiser = model()
    original = copy.deepcopy(denoiser)
    network = build(denoiser, ATTENTION, linear=4)
    randomize(network)
    network.remove()
    assert type(denoiser.blocks[0].attn.to_q) is torch.nn.Linear
    assert set(denoiser.state_dict()) == set(original.state_dict())


@pytest.mark.parametrize("kind", TYPES)
def test_half_precision_base_with_float32_adapter(kind: str) -> None:
    denoiser = model().to(torch.bfloat16)
    network = build(denoiser, [*ATTENTION, "proj_in", "conv"], type=kind, linear=4, conv=2)
    network.float()
    randomize(network)
    x = [t.to(torch.bfloat16) for t in inputs()]
    with torch.no_grad():
        out = denoiser(*x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert all(p.dtype == torch.float32 for p in network.parameters())


def test_input_casting_off_under_autocast_gives_the_same_output_and_gradients() -> None:
    """Mixed precision: activations stay bf16 into the float32 LoRA (autocast casts the weights instead)."""
    denoiser = model().to(torch.bfloat16)
    network = build(denoiser, ATTENTION, linear=4)
    randomize(network)
    network.float()
    x = torch.randn(2, 4, denoiser.blocks[0].attn.to_q.in_features).to(torch.bfloat16)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        for p in network.parameters():
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = denoiser.blocks[0].attn.to_q(x)
        out.float().sum().backward()
        return out.detach(), [p.grad.clone() for p in network.parameters() if p.grad is not None]

    cast_out, cast_grads = run()
    network.cast_inputs(False)
    plain_out, plain_grads = run()
    assert plain_out.dtype == torch.bfloat16
    assert torch.allclose(plain_out.float(), cast_out.float(), atol=1e-2)
    assert len(plain_grads) == len(cast_grads) == 2  # to_q's A and B
    assert all(torch.allclose(a, b, rtol=2e-2, atol=1e-3) for a, b in zip(plain_grads, cast_grads))


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_rank_dropout_is_random_while_training_unbiased_and_off_in_eval(kind: str) -> None:
    denoiser = model()
    network = build(denoiser, ATTENTION, type=kind, linear=8, linear_alpha=8, network_kwargs={"rank_dropout": 0.5})
    randomize(network)
    denoiser.eval()
    layer = denoiser.get_submodule("blocks.0.attn.to_q")
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        evaluated = layer(x)
        network.disable()
        base = layer(x)
        network.enable()
        denoiser.train()
        torch.manual_seed(0)
        draws = torch.stack([layer(x) for _ in range(2000)])
        denoiser.eval()
        again = layer(x)
    assert not torch.allclose(draws[0], draws[1]), "training passes drop different rank components"
    assert torch.allclose(again, evaluated), "no dropout in eval"
    error = (draws.mean(0) - evaluated).abs().max() / (evaluated - base).abs().max()
    assert error < 0.1, f"kept components are scaled by 1 / (1 - p): the mean update is off by {error:.3f}"


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_module_dropout_one_trains_nothing_and_eval_keeps_the_adapter(kind: str) -> None:
    denoiser = model()
    network = build(denoiser, ATTENTION, type=kind, linear=4, module_dropout=1.0)
    randomize(network)
    denoiser.eval()
    x, t, context = inputs()
    with torch.no_grad():
        evaluated = denoiser(x, t, context)
        network.disable()
        base = denoiser(x, t, context)
        network.enable()
        denoiser.train()
        trained = denoiser(x, t, context)
        denoiser.eval()
    assert torch.allclose(trained, base, atol=1e-6) and not torch.allclose(evaluated, base)


def _layout(blocks: tuple[str, ...] = (), block_of=None):
    from toolkit.network.targets import NetworkLayout

    return NetworkLayout("transformer", blocks, block_of)


def test_transformer_only_keeps_the_adapter_inside_the_named_blocks() -> None:
    config = NetworkConfig(linear=4)
    inside = Network.build({"transformer": model()}, {"transformer": ATTENTION}, config, layout=_layout(("blocks.1",)))
    assert {key.split(".")[2] for key in inside.state_dict()} == {"1"}
    everywhere = Network.build({"transformer": model()}, {"transformer": ATTENTION}, NetworkConfig(linear=4, transformer_only=False),
                               layout=_layout(("blocks.1",)))
    assert {key.split(".")[2] for key in everywhere.state_dict()} == {"0", "1"}
    assert wrapped(Network.build({"transformer": model()}, {"transformer": ATTENTION}, config, layout=_layout())) == wrapped(everywhere)


def test_block_dims_give_each_block_its_rank_and_alpha() -> None:
    dims, alphas = [0] * 25, [1.0] * 25
    dims[3], alphas[3], dims[7], alphas[7] = 2, 1.0, 6, 3.0
    conv = [0] * 25
    conv[7] = 4
    config = NetworkConfig(linear=8, network_kwargs={"block_dims": ",".join(map(str, dims)), "block_alphas": alphas,
                                                     "conv_block_dims": conv})
    network = Network.build({"transformer": model()}, {"transformer": [*ATTENTION, "conv"]}, config,
                            layout=_layout(block_of=lambda path: 3 if path.startswith("blocks.0") else 7))
    state = network.state_dict()
    assert state["transformer.blocks.0.attn.to_q.lora_A.weight"].shape[0] == 2 and float(state["transformer.blocks.0.attn.to_q.alpha"]) == 1.0
    assert state["transformer.blocks.1.attn.to_q.lora_A.weight"].shape[0] == 6 and float(state["transformer.blocks.1.attn.to_q.alpha"]) == 3.0
    assert state["transformer.blocks.1.conv.lora_A.weight"].shape[0] == 4 and "transformer.blocks.0.conv.lora_A.weight" not in state
    with pytest.raises(ValueError, match="needs 25 values"):
        NetworkConfig(block_dims=[4] * 12)


@pytest.mark.parametrize("kind", ["lora", "loha"])
def test_full_if_contains_gives_matching_targets_a_full_difference_instead(kind: str) -> None:
    """ai-toolkit's full_if_contains: matching targets (by dotted or kohya-flat name; a 3x3 conv among them even without
    ``conv``) get ``diff`` / ``diff_b`` instead of the network's low-rank adapter, which the others keep."""
    base, denoiser = model(), model()
    network = build(denoiser, [*ATTENTION, "conv"], type=kind, linear=4, full_if_contains=["to_out", "blocks_1_conv"])
    state = network.state_dict()
    assert state["transformer.blocks.0.attn.to_out.0.diff"].shape == (16, 16)
    assert state["transformer.blocks.0.attn.to_out.0.diff_b"].shape == (16,)
    assert state["transformer.blocks.1.conv.diff"].shape == (16, 16, 3, 3)
    assert not any(key.startswith("transformer.blocks.0.conv.") for key in state)  # a 3x3 conv not named: not wrapped
    assert {key.rsplit(".", 1)[1] for key in state if ".to_out.0." in key} == {"diff", "diff_b"}
    low_rank = {"lora": "lora_A.weight", "loha": "hada_w1_a"}[kind]
    assert all(f"transformer.blocks.{b}.attn.{name}.{low_rank}" in state for b in (0, 1) for name in ("to_q", "to_k", "to_v"))
    x = inputs()
    with torch.no_grad():
        assert torch.equal(denoiser(*x), base(*x)), "fresh adapters change nothing"


def test_a_full_layer_alone_equals_the_merged_layer_and_only_its_difference_learns() -> None:
    base, denoiser = model(), model().requires_grad_(False)
    network = build(denoiser, ["to_out", "conv"], full_if_contains=["to_out", "conv"])
    assert all(key.endswith((".diff", ".diff_b")) for key in network.state_dict())
    randomize(network)
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for key, value in network.state_dict().items():
            layer, _, suffix = key.removeprefix("transformer.").rpartition(".")
            target = merged.get_submodule(layer)
            (target.weight if suffix == "diff" else target.bias).add_(0.7 * value)
    network.multiplier = 0.7
    x = inputs()
    assert torch.allclose(denoiser(*x), merged(*x), atol=1e-5)
    denoiser(*x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())
    network.disable()
    with torch.no_grad():
        assert torch.equal(denoiser(*x), base(*x))
    network.enable()
    network.remove()
    assert torch.equal(denoiser(*x), base(*x))


def test_full_if_contains_that_matches_no_target_is_an_error() -> None:
    with pytest.raises(EaselError, match="network.full_if_contains: to_z match no layer the network wraps"):
        build(model(), ATTENTION, full_if_contains="to_z")
