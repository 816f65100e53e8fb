"""Counting and making tokens: the server's own counts, a local tokenizer, or words.

The server's ``usage`` is the authority for output tokens whenever it is sent (it is
what the server generated). A local tokenizer (``--tokenizer tokenizer.json``, a Hugging
Face ``tokenizers`` file: the one the served model ships) does three things better than
without one: synthetic prompts of exactly N tokens, per-chunk token counts for the
inter-token latency, and output counts from servers that send no usage.

Without a tokenizer, synthetic prompts are made of common English words that are one
token each (with their leading space) in the GPT-2, Llama and cl100k vocabularies, so N
words are close to N tokens; text is counted as its number of words.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError

__all__ = ("HfTokens", "TokenCounter", "WordTokens", "load_tokens")

# Single-token English words (with a leading space) in common BPE vocabularies.
_WORDS = (
    "the of and to in is that for it as with was on be at by this have from or one had "
    "not but what all were when we there can an your which their said if do will each "
    "about how up out them then she many some so these would other into has more her two "
    "like him see time could no make than first been its who now people my made over did "
    "down only way find use may water long little very after words called just where most "
    "know get through back much before go good new write our used me man too any day same "
    "right look think also around another came come work three must because does part even "
    "place well such here take why help put different away again off went old number great "
    "tell men say small every found still between name should home big give air line set "
    "own under read last never us left end along while might next sound below saw something"
).split()


class TokenCounter(Protocol):
    """Counts tokens in text and makes text of a given token count."""

    name: str

    def count(self, text: str) -> int: ...

    def text(self, rng: random.Random, tokens: int) -> str: ...


class WordTokens:
    """No tokenizer: one word is one token (see the module docstring)."""

    name = "words"

    def count(self, text: str) -> int:
        """Words in ``text``."""
        return len(text.split())

    def text(self, rng: random.Random, tokens: int) -> str:
        """``tokens`` common words drawn with ``rng``."""
        return " ".join(rng.choices(_WORDS, k=max(0, tokens)))


class HfTokens:
    """A Hugging Face ``tokenizer.json`` (``pip install 'synth-engine[bench]'``).

    Args:
        path: the tokenizer file (or a folder holding ``tokenizer.json``).

    Raises:
        ConfigError: the ``tokenizers`` package is missing or the file cannot be loaded.
    """

    def __init__(self, path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                "--tokenizer needs the tokenizers package",
                path="bench",
                field="--tokenizer",
                hint="pip install 'synth-engine[bench]'",
            ) from exc
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(p))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise ConfigError(
                f"cannot load tokenizer {p}: {exc}",
                path="bench",
                field="--tokenizer",
                hint="give a tokenizer.json file (the one the served model ships)",
            ) from exc
        self.name = str(p)

    def count(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens added)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def text(self, rng: random.Random, tokens: int) -> str:
        """Text of exactly ``tokens`` tokens (words drawn with ``rng``, cut by token ids)."""
        if tokens <= 0:
            return ""
        words = rng.choices(_WORDS, k=tokens + 8)
        ids = self._tok.encode(" ".join(words), add_special_tokens=False).ids[:tokens]
        text: str = self._tok.decode(ids)
        # A decode/encode round trip can merge across the cut; trim until it fits.
        while self.count(text) > tokens and ids:
            ids = ids[:-1]
            text = self._tok.decode(ids)
        return text


def load_tokens(path: str | None) -> TokenCounter:
    """The tokenizer at ``path``, or :class:`WordTokens` when None."""
    return WordTokens() if not path else HfTokens(path)
