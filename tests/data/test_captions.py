"""Caption rules: trigger words, caption dropout, token shuffle and dropout."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.data.helpers import dataset
from toolkit.data.captions import (CaptionRules, apply_trigger, contains_phrase, drop_tokens, drops_caption, join_tokens,
                                   shuffle_tokens, split_tokens)


def test_split_and_join_tokens():
    assert split_tokens(" a dog,  grass ,, sky ") == ["a dog", "grass", "sky"]
    assert join_tokens(["a", "b"]) == "a, b"


@pytest.mark.parametrize("caption,expected", [
    ("a photo of [trigger]", "a photo of ohwx"),
    ("[name] in the park", "ohwx in the park"),
    ("a dog on grass", "ohwx a dog on grass"),
    ("already ohwx here", "already ohwx here"),
    ("ohwxman is not it", "ohwx ohwxman is not it"),
    ("", "ohwx"),
])
def test_trigger_replaced_or_prepended(caption, expected):
    assert apply_trigger(caption, "ohwx") == expected


def test_trigger_not_prepended_for_regularization_but_still_replaced():
    assert apply_trigger("a dog", "ohwx", add_if_missing=False) == "a dog"
    assert apply_trigger("[trigger], a dog", "ohwx", add_if_missing=False) == "ohwx, a dog"


def test_placeholders_removed_without_trigger():
    assert apply_trigger("[trigger], a dog,  [name] , grass", None) == "a dog, grass"
    assert apply_trigger("a dog", None) == "a dog"


def test_contains_phrase():
    assert contains_phrase("x, sks dog", "sks") and not contains_phrase("sksdog", "sks")
    assert contains_phrase("a <lora> b", "<lora>")


def test_dataset_trigger_overrides_process_trigger():
    assert CaptionRules.from_config(dataset("x", trigger_word="mine"), "process").trigger == "mine"
    assert CaptionRules.from_config(dataset("x"), "process").trigger == "process"
    assert CaptionRules.from_config(dataset("x", is_reg=True), "process").add_trigger is False


def test_caption_dropout_rate():
    rng = random.Random(0)
    drops = sum(drops_caption(0.3, rng) for _ in range(4000))
    assert 1000 < drops < 1400
    assert not any(drops_caption(0.0, rng) for _ in range(100))
    assert all(drops_caption(1.0, rng) for _ in range(100))


def test_dropped_caption_is_fully_empty_even_with_trigger():
    rules = CaptionRules(trigger="ohwx", dropout_rate=1.0)
    assert rules.apply("a dog", random.Random(1)) == ""


def test_shuffle_keeps_leading_tokens():
    tokens = ["t0", "t1", "t2", "t3", "t4", "t5"]
    seen = set()
    for seed in range(50):
        out = shuffle_tokens(tokens, 2, random.Random(seed))
        assert out[:2] == ["t0", "t1"] and sorted(out) == sorted(tokens)
        seen.add(tuple(out))
    assert len(seen) > 10


def test_token_dropout_rate_and_keep():
    tokens = [f"t{i}" for i in range(10)]
    rng = random.Random(3)
    kept = Counter()
    for _ in range(2000):
        out = drop_tokens(tokens, 0.25, 1, rng)
        assert out[0] == "t0" and out == [t for t in tokens if t in out]
        kept.update(out[1:])
    assert all(1350 < kept[f"t{i}"] < 1650 for i in range(1, 10))
    assert drop_tokens(tokens, 1.0, 3, rng) == tokens[:3]


def test_rules_apply_in_order_and_are_reproducible():
    rules = CaptionRules(trigger="ohwx", shuffle=True, keep_tokens=1, token_dropout_rate=0.2)
    caption = "a portrait, red hair, smiling, outdoors, sunlight"
    first = [rules.apply(caption, random.Random(seed)) for seed in range(20)]
    assert first == [rules.apply(caption, random.Random(seed)) for seed in range(20)]
    assert len(set(first)) > 5
    for text in first:
        assert text.startswith("ohwx a portrait")


def test_rules_without_randomness_leave_caption_as_written():
    rules = CaptionRules(trigger=None)
    assert rules.apply("a,b ,  c", random.Random(0)) == "a,b ,  c"


def test_possible_captions():
    assert CaptionRules(trigger="t").possible("a dog") == {"t a dog"}
    assert CaptionRules(trigger="t", dropout_rate=0.1).possible("a dog") == {"t a dog", ""}
    assert CaptionRules(dropout_rate=1.0).possible("a dog") == {""}
    assert CaptionRules(shuffle=True).possible("a, b") is None
    assert CaptionRules(token_dropout_rate=0.1).possible("a, b") is None
    rules = CaptionRules(trigger="t", dropout_rate=0.5)
    produced = {rules.apply("a dog", random.Random(seed)) for seed in range(50)}
    assert produced == rules.possible("a dog")


def test_empty_dataset_trigger_turns_the_process_trigger_off():
    rules = CaptionRules.from_config(dataset("x", trigger_word=""), "process")
    assert rules.trigger is None
    assert rules.apply("[trigger] a dog", random.Random(0)) == "a dog"
