"""Rule-based filters shared by the methods (dedup, length windows, votes, class balance).

Each filter is a small object with one job and no hidden global state; a filter that
rejects says why, so the reason can go on the row. Method-specific rules live with their
method: SELF-GUIDE's case-sensitive noise phrases (the reference's 14 greetings) are in
``engine/methods/selfguide/rules.py`` and its whole-label mapping is
``engine.io.tasks.match_label``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = (
    "BloomDedup",
    "ExactDedup",
    "LengthBounds",
    "Vote",
    "balance_classes",
    "majority_vote",
    "normalize",
)

T = TypeVar("T")

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-cased, whitespace-collapsed, stripped text (the key exact dedup compares)."""
    return _SPACE.sub(" ", text).strip().lower()


class ExactDedup:
    """Exact-match dedup on normalised text, remembering 8-byte digests (not the strings).

    ``add(text)`` returns True the first time a text is seen and False for a repeat.
    """

    __slots__ = ("_seen",)

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self._seen: set[bytes] = set()
        for text in initial:
            self.add(text)

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=8).digest()

    def __contains__(self, text: str) -> bool:
        return self._key(text) in self._seen

    def add(self, text: str) -> bool:
        """Remember ``text``; True if it was new."""
        key = self._key(text)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def __len__(self) -> int:
        return len(self._seen)


class BloomDedup:
    """Approximate dedup in fixed memory: a Bloom filter over normalised text.

    Memory is set at construction (``capacity`` texts at ``error_rate``: 10 million at
    0.1% take 18 MB) and does not grow with the input, which is what a streaming corpus
    of any size needs; :class:`ExactDedup` grows by ~70 bytes per distinct text instead.
    The price is false duplicates: a new text is taken for a repeat with probability
    about ``error_rate`` while fewer than ``capacity`` texts were added (more beyond it;
    ``saturated`` says when that happened). Never a false "new".
    """

    __slots__ = ("_bits", "_k", "_m", "added", "capacity")

    def __init__(self, capacity: int = 10_000_000, error_rate: float = 0.001) -> None:
        if capacity < 1 or not 0 < error_rate < 1:
            raise ValueError("capacity must be >= 1 and 0 < error_rate < 1")
        m = math.ceil(-capacity * math.log(error_rate) / (math.log(2) ** 2))
        self._m = m
        self._k = max(1, round(m / capacity * math.log(2)))
        self._bits = bytearray((m + 7) // 8)
        self.capacity = capacity
        self.added = 0

    @property
    def saturated(self) -> bool:
        """More texts were added than the filter was sized for (false duplicates rise)."""
        return self.added > self.capacity

    @property
    def nbytes(self) -> int:
        """Memory held by the bit array."""
        return len(self._bits)

    def add(self, text: str) -> bool:
        """Remember ``text``; True if it was (almost certainly) new."""
        d = hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()
        h1 = int.from_bytes(d[:8], "little")
        h2 = int.from_bytes(d[8:], "little") | 1
        bits = self._bits
        m = self._m
        new = False
        for i in range(self._k):
            pos = (h1 + i * h2) % m
            byte, mask = pos >> 3, 1 << (pos & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                new = True
        if new:
            self.added += 1
        return new


class LengthBounds:
    """Keep strings whose length (characters) lies in ``[low, high)``.

    ``from_examples`` sets the bounds to mean ± k standard deviations of the examples'
    lengths (SELF-GUIDE: k = 2, ``mean - 2σ <= len < mean + 2σ``).
    """

    __slots__ = ("high", "low")

    def __init__(self, low: float, high: float) -> None:
        if high <= low:
            raise ValueError(f"empty length range [{low}, {high})")
        self.low = low
        self.high = high

    @classmethod
    def from_examples(cls, examples: Sequence[str], k: float = 2.0) -> LengthBounds:
        """Bounds from the examples' length distribution (one example: ± its length)."""
        if not examples:
            raise ValueError("no examples to take a length distribution from")
        lengths = [len(e) for e in examples]
        mean = statistics.fmean(lengths)
        sd = statistics.pstdev(lengths) if len(lengths) > 1 else mean
        sd = max(sd, 1.0)
        return cls(mean - k * sd, mean + k * sd)

    def check(self, text: str) -> str | None:
        """None if kept, else the drop reason."""
        n = len(text)
        if n < self.low:
            return f"too short ({n} < {self.low:.0f} chars)"
        if n >= self.high:
            return f"too long ({n} >= {self.high:.0f} chars)"
        return None


class Vote:
    """The result of a majority vote."""

    __slots__ = ("total", "top", "winner")

    def __init__(self, winner: str | None, top: int, total: int) -> None:
        self.winner = winner
        self.top = top
        self.total = total

    @property
    def frequency(self) -> float:
        """Share of the samples that agree with the winner."""
        return self.top / self.total if self.total else 0.0


def majority_vote(samples: Sequence[str], *, min_frequency: float = 0.3) -> Vote:
    """Self-consistency vote: the most frequent sample; ties go to the shortest.

    Samples are compared after stripping. The winner is None when there are no samples
    or its frequency (top count / samples) is below ``min_frequency``.
    """
    cleaned = [s.strip() for s in samples if s.strip()]
    if not cleaned:
        return Vote(None, 0, 0)
    counts = Counter(cleaned)
    top = max(counts.values())
    winner = min((s for s, c in counts.items() if c == top), key=lambda s: (len(s), s))
    vote = Vote(winner, top, len(cleaned))
    if vote.frequency < min_frequency:
        vote.winner = None
    return vote


def balance_classes(
    items: Sequence[T], label_of: Sequence[str], *, seed: int
) -> tuple[list[T], list[T]]:
    """Downsample every class to the size of the smallest one, seeded.

    Returns:
        (kept, dropped), each in the input order.
    """
    if len(items) != len(label_of):
        raise ValueError("items and labels differ in length")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(label_of):
        by_label.setdefault(label, []).append(i)
    if not by_label:
        return [], []
    smallest = min(len(v) for v in by_label.values())
    rng = random.Random(f"balance:{seed}")
    keep: set[int] = set()
    for label in sorted(by_label):
        keep.update(rng.sample(by_label[label], smallest))
    kept = [items[i] for i in range(len(items)) if i in keep]
    dropped = [items[i] for i in range(len(items)) if i not in keep]
    return kept, dropped
