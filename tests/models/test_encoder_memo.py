"""The previews' text-encoder outputs kept between rounds (toolkit/models/encoder_memo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import run
from tests.train.test_memory_options import config
from toolkit.config.blocks import ModelConfig
from toolkit.models.base import GenerateRequest, ModelAdapter
from toolkit.models.loading import load_adapter
from toolkit.models.encoder_memo import EncoderMemo, _key, _moved


def _request(prompt: str) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, width=64, height=64, steps=2, guidance_scale=1.0, seed=3, sampler="flowmatch")


def test_a_prompt_seen_before_is_not_encoded_again_and_makes_the_same_image(registry: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), registry, device="cpu")
    moves: list[tuple[tuple[str, ...], str]] = []
    monkeypatch.setattr(adapter, "move", lambda names, device: moves.append((tuple(names), str(device))))
    encoder = adapter.text_encoders["text_encoder"]
    computed: list[int] = []
    encoder.get_input_embeddings().register_forward_hook(lambda *_: computed.append(1))  # the encoder really runs
    memo = EncoderMemo(adapter, parked=["text_encoder"])
    with torch.no_grad():
        plain = adapter.generate([_request("a fox")])[0].tobytes()
        computed.clear()
        with memo.round():
            first = adapter.generate([_request("a fox")])[0].tobytes()
        assert computed and memo.misses == len(computed)
        assert moves == [(("text_encoder",), "cpu"), (("text_encoder",), "cpu")]  # brought in (here: the CPU), parked
        computed.clear(), moves.clear()
        with memo.round():
            again = adapter.generate([_request("a fox")])[0].tobytes()
        assert not computed and not moves, "a remembered prompt needs neither the encoder nor its move"
        with memo.round():
            adapter.generate([_request("a heron")])
        assert computed and len(moves) == 2
    assert plain == first == again
    assert encoder.forward.__func__ is type(encoder).forward, "the encoder's own forward is back after each round"


def test_a_forward_set_on_the_instance_before_is_kept(registry: Any) -> None:
    adapter = load_adapter(ModelConfig(name_or_path="tiny:zimage", arch="zimage:turbo"), registry, device="cpu")
    encoder = adapter.text_encoders["text_encoder"]
    calls: list[int] = []
    original = encoder.forward

    def hooked(*args: Any, **kwargs: Any) -> Any:  # as accelerate's add_hook_to_module wraps a module
        calls.append(1)
        return original(*args, **kwargs)

    encoder.forward = hooked
    memo = EncoderMemo(adapter, parked=[])
    with torch.no_grad(), memo.round():
        adapter.generate([_request("a fox")])
    assert calls and encoder.forward is hooked


def test_keys_stand_for_contents_and_leave_out_what_they_cannot_name() -> None:
    ids = torch.tensor([[1, 2, 3]])
    assert _key(("text_encoder", (ids,), {"output_hidden_states": True})) == _key(
        ("text_encoder", (ids.clone(),), {"output_hidden_states": True}))
    assert _key((ids,)) != _key((torch.tensor([[1, 2, 4]]),)) != _key((ids.float(),))
    assert _key((object(),)) is None


def test_outputs_move_with_their_structure() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPast

    from transformers import DynamicCache

    output = BaseModelOutputWithPast(last_hidden_state=torch.ones(1, 2), hidden_states=(torch.zeros(1), torch.ones(1)),
                                     past_key_values=DynamicCache())
    moved = _moved(output, torch.device("cpu"))
    assert isinstance(moved, BaseModelOutputWithPast) and moved is not output
    assert torch.equal(moved.hidden_states[1], output.hidden_states[1])
    assert moved.past_key_values is None, "a key-value cache is not kept (it would hold device memory)"


def test_a_run_with_the_text_encoder_unloaded_brings_it_back_for_the_first_previews_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.unload_text_encoder: two preview rounds (before and after training), the encoder moved in once."""
    moves: list[tuple[tuple[str, ...], str]] = []
    real = ModelAdapter.move

    def move(self: ModelAdapter, names: list[str], device: Any) -> None:
        moves.append((tuple(names), str(device)))
        real(self, names, device)

    monkeypatch.setattr(ModelAdapter, "move", move)
    path = config(tmp_path, "memo", "zimage:turbo", sample=True, model={},
                  train={"cache_text_embeddings": True, "unload_text_encoder": True})
    assert run.main([str(path)]) == 0
    assert len(list((tmp_path / "out" / "memo" / "samples").glob("*.png"))) == 2
    text_moves = [device for names, device in moves if names == ("text_encoder",)]
    assert text_moves == ["cpu", "cpu"], moves  # the first round's: in (the CPU here) and out; none in the second


class _Counted(torch.nn.Linear):
    """A linear layer counting the times its forward really runs (module hooks run on remembered calls too)."""

    runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return super().forward(x)


class _Encoders:
    """What the memo needs of an adapter: its text encoders (one counted linear layer here)."""

    def __init__(self) -> None:
        self.encoder = _Counted(4, 256)  # 1 KiB of float32 output per row
        self.text_encoders = {"text_encoder": self.encoder}
        self.device = torch.device("cpu")

    @property
    def runs(self) -> int:
        return self.encoder.runs

    def move(self, names: list[str], device: Any) -> None:
        pass


def _encode(memo: EncoderMemo, encoders: _Encoders, row: int, **states: Any) -> torch.Tensor:
    with torch.no_grad(), memo.round(states):
        return encoders.text_encoders["text_encoder"](torch.full((1, 4), float(row)))


def test_the_least_recently_used_outputs_go_first_beyond_the_limit() -> None:
    encoders = _Encoders()
    memo = EncoderMemo(encoders, parked=[], limit_bytes=2 * 1024)  # type: ignore[arg-type]
    for row in (1, 2, 1, 3):  # 1 is used again before 3 comes: 2 is the one dropped
        _encode(memo, encoders, row)
    assert encoders.runs == 3 and memo.held_bytes == 2 * 1024
    _encode(memo, encoders, 1), _encode(memo, encoders, 3)
    assert encoders.runs == 3
    _encode(memo, encoders, 2)
    assert encoders.runs == 4
    memo.set_limit(1024)
    assert len(memo.outputs) == 1 and memo.held_bytes == 1024
    memo.set_limit(1000)  # smaller than one output: nothing is kept
    _encode(memo, encoders, 5), _encode(memo, encoders, 5)
    assert not memo.outputs and memo.held_bytes == 0 and encoders.runs == 6


def test_an_encoders_state_is_part_of_the_key_and_an_unknown_state_is_never_remembered() -> None:
    encoders = _Encoders()
    memo = EncoderMemo(encoders, parked=[])  # type: ignore[arg-type]
    plain = _encode(memo, encoders, 1)
    with_lora = _encode(memo, encoders, 1, text_encoder=(("style.safetensors", 1.0),))
    assert encoders.runs == 2 and torch.equal(plain, with_lora)  # the fake's output does not change; the key does
    _encode(memo, encoders, 1), _encode(memo, encoders, 1, text_encoder=(("style.safetensors", 1.0),))
    assert encoders.runs == 2 and memo.hits == 2
    _encode(memo, encoders, 1, text_encoder=None), _encode(memo, encoders, 1, text_encoder=None)
    assert encoders.runs == 4 and len(memo.outputs) == 2
