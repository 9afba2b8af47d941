"""Caption rules with ai-toolkit semantics; each rule is a small pure function.

Order of application (``CaptionRules.apply``): caption dropout (the whole caption becomes empty,
trigger included), then the comma-separated parts: shuffle after the first ``keep_tokens``, and
token dropout after the first ``keep_tokens``; then the trigger word (``[trigger]`` / ``[name]``
replaced, prepended when absent unless the set is a regularization set); last ``random_triggers`` appended
(ai-toolkit's count rule). Randomness comes only from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from toolkit.config.blocks import DatasetConfig

PLACEHOLDERS = ("[trigger]", "[name]")


def split_tokens(caption: str) -> list[str]:
    """Comma-separated parts, stripped, empty parts dropped."""
    return [part.strip() for part in caption.split(",") if part.strip()]


def join_tokens(tokens: list[str]) -> str:
    """Parts back into one caption."""
    return ", ".join(tokens)


def drops_caption(rate: float, rng: random.Random) -> bool:
    """Caption dropout: True (the whole caption becomes empty) with probability ``rate``."""
    return rate > 0 and rng.random() < rate


def shuffle_tokens(tokens: list[str], keep: int, rng: random.Random) -> list[str]:
    """Shuffle the parts after the first ``keep``."""
    head, tail = tokens[:keep], tokens[keep:]
    rng.shuffle(tail)
    return head + tail


def drop_tokens(tokens: list[str], rate: float, keep: int, rng: random.Random) -> list[str]:
    """Drop each part after the first ``keep`` with probability ``rate``."""
    if rate <= 0:
        return list(tokens)
    return tokens[:keep] + [token for token in tokens[keep:] if rng.random() >= rate]


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, ignoring case and runs of spaces.

    So ``ohwx`` is not found in ``ohwxman``, and ``drawn by KSH`` is found in ``Drawn  by ksh``.
    """
    words = [re.escape(word) for word in phrase.split()]
    if not words:
        return True
    return re.search(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", text, flags=re.IGNORECASE) is not None


def _tidy(text: str) -> str:
    """Clean up after a placeholder was replaced by nothing: no empty parts, single spaces."""
    parts = [re.sub(r"\s+", " ", part).strip() for part in text.split(",")]
    return ", ".join(part for part in parts if part)


def apply_trigger(caption: str, trigger: str | None, *, add_if_missing: bool = True) -> str:
    """Replace ``[trigger]`` and ``[name]`` by the trigger word; prepend it when it is absent.

    Without a trigger word the placeholders are removed. An empty caption gets the trigger alone.
    """
    word = (trigger or "").strip()
    if any(placeholder in caption for placeholder in PLACEHOLDERS):
        for placeholder in PLACEHOLDERS:
            caption = caption.replace(placeholder, word)
        caption = _tidy(caption)
    if word and add_if_missing and not contains_phrase(caption, word):
        caption = f"{word} {caption}".strip()
    return caption


def random_trigger_words(config: DatasetConfig) -> tuple[str, ...]:
    """``random_triggers`` as words: the list, or the non-empty lines of the file it names."""
    from pathlib import Path

    from toolkit.errors import EaselError

    if not isinstance(config.random_triggers, str):
        return tuple(word.strip() for word in config.random_triggers if word.strip())
    path = Path(config.random_triggers).expanduser()
    if not path.is_file():
        raise EaselError(f"dataset '{config.folder_path}': random_triggers '{config.random_triggers}' is no file; give a "
                         "list of words or a text file with one per line.")
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@dataclass(frozen=True)
class CaptionRules:
    """The caption settings of one dataset."""

    trigger: str | None = None
    add_trigger: bool = True
    """Prepend the trigger where absent (false for regularization sets)."""
    dropout_rate: float = 0.0
    shuffle: bool = False
    keep_tokens: int = 0
    token_dropout_rate: float = 0.0
    random_triggers: tuple[str, ...] = ()
    random_triggers_max: int = 1

    @classmethod
    def from_config(cls, config: DatasetConfig, trigger_word: str | None) -> "CaptionRules":
        """The dataset's rules; its own ``trigger_word`` overrides the process-level one."""
        trigger = config.trigger_word if config.trigger_word is not None else trigger_word
        return cls(trigger=trigger or None, add_trigger=not config.is_reg, dropout_rate=config.caption_dropout_rate,
                   shuffle=config.shuffle_tokens, keep_tokens=config.keep_tokens,
                   token_dropout_rate=config.token_dropout_rate, random_triggers=random_trigger_words(config),
                   random_triggers_max=config.random_triggers_max)

    @property
    def varies_text(self) -> bool:
        """Whether the rules can produce more than two texts per caption (full text and empty)."""
        return self.shuffle or self.token_dropout_rate > 0 or bool(self.random_triggers)

    def _finish(self, caption: str, rng: random.Random | None = None) -> str:
        caption = apply_trigger(caption, self.trigger, add_if_missing=self.add_trigger)
        if rng is None or not self.random_triggers:
            return caption
        count = self.random_triggers_max if self.random_triggers_max <= 1 else rng.randint(0, self.random_triggers_max)
        extra = rng.sample(self.random_triggers, min(count, len(self.random_triggers)))
        return join_tokens([part for part in (caption, *extra) if part])

    def apply(self, caption: str, rng: random.Random) -> str:
        """The caption that is trained on, drawn with ``rng``."""
        if drops_caption(self.dropout_rate, rng):
            return ""
        if self.shuffle or self.token_dropout_rate > 0:
            tokens = split_tokens(caption)
            if self.shuffle:
                tokens = shuffle_tokens(tokens, self.keep_tokens, rng)
            tokens = drop_tokens(tokens, self.token_dropout_rate, self.keep_tokens, rng)
            caption = join_tokens(tokens)
        return self._finish(caption, rng)

    def possible(self, caption: str) -> set[str] | None:
        """Every text ``apply`` can return for ``caption``; None when shuffling/token dropout make too many."""
        if self.varies_text:
            return None
        texts = {self._finish(caption)} if self.dropout_rate < 1 else set()
        if self.dropout_rate > 0:
            texts.add("")
        return texts
