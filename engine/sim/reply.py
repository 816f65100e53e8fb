"""Writing one simulated reply from an :class:`~engine.sim.ask.Ask` and a choice digest.

Every choice (words, label, score, sentence lengths) comes from a ``random.Random``
seeded with the choice's digest, so a reply is a pure function of (seed, request body,
choice index). Free text is words of the prompt in sentences (a capital first, a full
stop last, 5-14 words each), after the ``[simulated]`` label: on the same line for a
one-line reply, on a line of its own above a multi-line format, so that parsers reading
``Label: value`` or ``1. item`` lines from the start of a line still find them.

Lengths: plain text is as long as :func:`engine.sim.model.completion_plan` draws
(``max_tokens`` respected), or as the prompt asks (``in 50 words``, ``in two
sentences``), or as long in characters as the examples it mimics. A formatted reply
takes what its parts need (running text gets the drawn length less the fixed parts);
either is cut at ``max_tokens`` words, finishing with ``"length"``, as a model is.
Tokens are counted one per word, the label not included.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Sequence

from .ask import Ask, Free, Lit, Num, Part, Pick

__all__ = ("LABEL", "VOCAB", "WORDS", "fixed_reply", "prose", "write_reply")

LABEL = "[simulated]"

# 256 words, so one digest byte picks one word. Some end in "." to make pseudo-sentences.
_BASE_WORDS = (
    "the a an this that each every some many few model answer data result method system "
    "user query task step plan idea note list table value field record sample example "
    "text prompt reply score rubric skill case goal rule test check point part piece "
    "clear quick short long simple careful useful direct brief exact small large new "
    "good fair plain rich basic general specific common rare early late final first "
    "next last main key core extra open shared local global stable steady precise "
    "writes reads makes takes gives shows finds keeps uses builds checks tests lists "
    "explains describes compares ranks scores sorts groups joins splits counts marks "
    "improves refines expands covers follows meets helps guides supports handles "
    "and or but so then also often always never rarely quickly slowly clearly simply "
    "with for from into about over under between across within without through "
    "of to in on at by as per via near"
).split()


def _vocabulary() -> tuple[str, ...]:
    words = list(dict.fromkeys(_BASE_WORDS))
    i = 0
    while len(words) < 256:
        words.append(words[i] + ".")
        i += 1
    return tuple(words[:256])


VOCAB: tuple[str, ...] = _vocabulary()
"""The fixed vocabulary of ``answers = "random"`` (one digest byte picks one word)."""

WORDS: tuple[str, ...] = tuple(dict.fromkeys(_BASE_WORDS))
"""The words of replies to prompts that have none (``answers = "prompt"``)."""


_WORDS_PER_BLOCK = struct.Struct(">32H")


def _indices(rng: random.Random, count: int) -> list[int]:
    """``count`` 16-bit numbers from blake2b blocks keyed by one draw of ``rng`` (much
    cheaper per word than drawing each from ``rng``)."""
    key = rng.getrandbits(64).to_bytes(8, "big")
    out: list[int] = []
    block = 0
    while len(out) < count:
        digest = hashlib.blake2b(key + block.to_bytes(4, "big"), digest_size=64).digest()
        out.extend(_WORDS_PER_BLOCK.unpack(digest))
        block += 1
    return out


def prose(words: Sequence[str], rng: random.Random, count: int, end: str = ".") -> str:
    """``count`` words drawn from ``words`` as sentences of 5-14 words."""
    if count <= 0:
        return ""
    nums = _indices(rng, count)
    size = len(words)
    out = [words[x % size] for x in nums[:count]]
    i = 0
    while i < count:
        w = out[i]
        out[i] = w[:1].upper() + w[1:]
        i += 5 + nums[i] % 10
        out[min(i, count) - 1] += end
    return " ".join(out)


def _sentence(words: Sequence[str], rng: random.Random, count: int, end: str = ".") -> str:
    out = rng.choices(words, k=count)
    out[0] = out[0][:1].upper() + out[0][1:]
    return " ".join(out) + end


def _phrase(words: Sequence[str], rng: random.Random, lo: int, hi: int) -> str:
    out = rng.choices(words, k=rng.randint(lo, hi))
    out[0] = out[0][:1].upper() + out[0][1:]
    return " ".join(out)


def _fill(part: Free, words: Sequence[str], rng: random.Random, budget: int, sentences: int) -> str:
    kind = part.kind
    if kind == "phrase":
        return _phrase(words, rng, 2, 4)
    if kind == "items":
        return ", ".join(_phrase(words, rng, 1, 3) for _ in range(rng.randint(2, 3)))
    if kind == "question":
        return _sentence(words, rng, rng.randint(6, 12), "?")
    if kind == "sentence":
        return _sentence(words, rng, rng.randint(6, 14))
    return prose(words, rng, max(4, budget // max(1, sentences)))


def _cut(body: str, limit: int) -> str:
    """``body`` up to its ``limit``-th word (whitespace inside kept)."""
    seen = 0
    in_word = False
    for i, ch in enumerate(body):
        if ch.isspace():
            in_word = False
        elif not in_word:
            in_word = True
            seen += 1
            if seen > limit:
                return body[:i].rstrip()
    return body


def _formatted(parts: Sequence[Part], words: Sequence[str], rng: random.Random, length: int) -> str:
    fixed = 0
    texts = 0
    for p in parts:
        if isinstance(p, Lit):
            fixed += len(p.text.split())
        elif isinstance(p, Free):
            texts += p.kind == "text"
            fixed += p.kind != "text"
        else:
            fixed += 1
    budget = max(4, length - fixed)
    pieces: list[str] = []
    for p in parts:
        if isinstance(p, Lit):
            pieces.append(p.text)
        elif isinstance(p, Pick):
            pieces.append(rng.choice(p.options))
        elif isinstance(p, Num):
            pieces.append(str(rng.randint(p.low, p.high)))
        else:
            pieces.append(_fill(p, words, rng, budget, texts))
    return "".join(pieces).strip()


def fixed_reply(
    parts: Sequence[Part], digest: bytes, max_tokens: int | None
) -> tuple[str, int, str]:
    """A reply of fixed text, listed answers and scores only (no free text): each choice
    read from the digest's bytes, without seeding a generator (the common case of a
    classifier's or a judge's one-word answer, kept cheap)."""
    pieces: list[str] = []
    at = 4
    for p in parts:
        if isinstance(p, Lit):
            pieces.append(p.text)
            continue
        value = int.from_bytes(digest[at : at + 2], "big")
        at = at + 2 if at < len(digest) - 3 else 4
        if isinstance(p, Pick):
            pieces.append(p.options[value % len(p.options)])
        elif isinstance(p, Num):
            pieces.append(str(p.low + value % (p.high - p.low + 1)))
    body = "".join(pieces).strip()
    tokens = len(body.split())
    reason = "stop"
    if max_tokens is not None and tokens > max_tokens:
        body, tokens, reason = _cut(body, max_tokens), max_tokens, "length"
    sep = "\n" if "\n" in body else " "
    return f"{LABEL}{sep}{body}", tokens, reason


def write_reply(
    ask: Ask,
    words: Sequence[str],
    rng: random.Random,
    *,
    length: int,
    max_tokens: int | None,
) -> tuple[str, int, str]:
    """One reply: (text, completion tokens, finish reason).

    Args:
        ask: what the prompt asks for.
        words: the words to draw from (``ask.words``, or a fixed vocabulary).
        rng: seeded with the choice's digest.
        length: the length drawn for plain text (within ``max_tokens``).
        max_tokens: the request's limit (None: none).
    """
    if ask.parts:
        body = _formatted(ask.parts, words, rng, length)
        tokens = len(body.split())
        reason = "stop"
        if max_tokens is not None and tokens > max_tokens:
            body, tokens, reason = _cut(body, max_tokens), max_tokens, "length"
        sep = "\n" if "\n" in body else " "
        return f"{LABEL}{sep}{body}", tokens, reason
    if ask.chars is not None:
        return _mimic(ask.chars, words, rng, max_tokens)
    if ask.length is not None or ask.sentences is not None:
        if ask.length is not None:
            want = rng.randint(*ask.length)
        else:
            want = sum(rng.randint(6, 14) for _ in range(ask.sentences or 1))
        if max_tokens is not None and want > max_tokens:
            return f"{LABEL} {prose(words, rng, max_tokens)}", max_tokens, "length"
        if ask.sentences is not None:
            return f"{LABEL} {_sentences(words, rng, ask.sentences, want)}", want, "stop"
        return f"{LABEL} {prose(words, rng, want)}", want, "stop"
    if length <= 0:
        return LABEL, 0, "stop"
    reason = "length" if max_tokens is not None and length == max_tokens else "stop"
    return f"{LABEL} {prose(words, rng, length)}", length, reason


def _sentences(words: Sequence[str], rng: random.Random, n: int, length: int) -> str:
    out: list[str] = []
    left = length
    for k in range(n, 0, -1):
        size = max(1, left // k)
        out.append(_sentence(words, rng, size))
        left -= size
    return " ".join(out)


def _mimic(
    chars: tuple[int, int], words: Sequence[str], rng: random.Random, max_tokens: int | None
) -> tuple[str, int, str]:
    lo, hi = chars
    target = rng.randint(lo + (hi - lo) // 4, hi - (hi - lo) // 4)
    picked: list[str] = []
    size = len(LABEL)
    limit = max_tokens if max_tokens is not None else 10_000
    while size < target and len(picked) < limit:
        w = rng.choice(words)
        if picked and size + 1 + len(w) > hi:  # the last words: one that still fits
            fits = [x for x in words if size + 1 + len(x) <= hi]
            if not fits:
                break
            w = rng.choice(fits)
        picked.append(w)
        size += 1 + len(w)
    if not picked:
        picked.append(rng.choice(words))
    picked[0] = picked[0][:1].upper() + picked[0][1:]
    reason = "length" if len(picked) == limit and size < target else "stop"
    return f"{LABEL} {' '.join(picked)}", len(picked), reason
