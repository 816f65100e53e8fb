"""A message's text prepared once for the simulated endpoint's readers.

Every reader of a prompt (:mod:`engine.sim.labels`, :mod:`engine.sim.formats`,
:mod:`engine.sim.ask`) first asks whether the words it looks for occur at all: a set
lookup in :attr:`Text.vocab`, built once per message in C-speed string operations. Only
then does it search positions and run a regular expression there. Scanning every
prompt with each pattern instead cost about a millisecond per 6 KB prompt in CPython.
"""

from __future__ import annotations

import string

__all__ = ("Text", "pool", "window")

_HEAD = 3000
_TAIL = 1500
_POOL_HEAD = 1000
_POOL_TAIL = 500
_DROP = (string.punctuation + string.digits).encode()
_SPACES = bytes.maketrans(_DROP, b" " * len(_DROP))
# The label of simulated text a prompt quotes, and what is left of "don't", "e.g.", "I'll".
_JUNK = ("simulated", "s", "t", "e", "g", "i", "ll", "re", "ve", "d", "m")


def _words(text: str) -> list[str]:
    """The words of ``text``: punctuation and digits become spaces (ASCII only)."""
    return text.encode().translate(_SPACES).decode().split()


def window(text: str) -> str:
    """The part of a message that is read: all of it, or its first 3,000 and last 1,500
    characters (where a prompt's instructions are: a preamble and rules before the
    material to work on, a request for the reply's format after it)."""
    if len(text) <= _HEAD + _TAIL:
        return text
    return text[:_HEAD] + "\n" + text[-_TAIL:]


def pool(text: str) -> tuple[str, ...]:
    """The distinct words of ``text`` (its first 1,000 and last 500 characters), in
    order, case kept, without punctuation and numbers: what replies are made of."""
    if len(text) > _POOL_HEAD + _POOL_TAIL:
        text = text[:_POOL_HEAD] + " " + text[-_POOL_TAIL:]
    words = dict.fromkeys(_words(text))
    for junk in _JUNK:
        if junk in words:
            del words[junk]
    return tuple(words)


class Text:
    """One message window: the text, its lower case and the set of its lower-case words.

    Args:
        raw: the text (already windowed with :func:`window` where it may be long).
    """

    __slots__ = ("lower", "raw", "vocab")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.lower = raw.lower()
        self.vocab = frozenset(_words(self.lower)) if raw else frozenset()

    def has(self, *words: str) -> bool:
        """Whether any of ``words`` (lower case, no punctuation) occurs in the text."""
        return not self.vocab.isdisjoint(words)

    def __bool__(self) -> bool:
        return bool(self.raw)
