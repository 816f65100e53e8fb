"""The shared rule filters: dedup, length bounds, vote, balance.

SELF-GUIDE's noise phrases and label mapping are tested in
tests/unit/methods/test_selfguide_rules.py."""

from __future__ import annotations

import pytest

from engine.filters import (
    ExactDedup,
    LengthBounds,
    balance_classes,
    majority_vote,
    normalize,
)


# ------------------------------------------------------------------ dedup
def test_normalize() -> None:
    assert normalize("  Hello \n\tWorld  ") == "hello world"


def test_exact_dedup_normalises_and_remembers() -> None:
    d = ExactDedup(["Seen before"])
    assert "seen  BEFORE " in d
    assert d.add("new text") is True
    assert d.add("New   text") is False
    assert d.add("seen before") is False
    assert len(d) == 2


# ------------------------------------------------------------------ length
def test_length_bounds_boundaries() -> None:
    b = LengthBounds(3, 6)
    assert b.check("ab") is not None and "too short" in (b.check("ab") or "")
    assert b.check("abc") is None  # low is inclusive
    assert b.check("abcde") is None
    assert "too long" in (b.check("abcdef") or "")  # high is exclusive


def test_length_bounds_empty_range() -> None:
    with pytest.raises(ValueError):
        LengthBounds(5, 5)


def test_length_bounds_from_examples_mean_2sd() -> None:
    b = LengthBounds.from_examples(["a" * 10, "a" * 20, "a" * 30])
    # mean 20, population sd sqrt(200/3) ~ 8.165
    assert b.low == pytest.approx(20 - 2 * 8.16497, abs=1e-3)
    assert b.high == pytest.approx(20 + 2 * 8.16497, abs=1e-3)
    assert b.check("a" * 3) is not None  # 3 < 3.67
    assert b.check("a" * 4) is None
    assert b.check("a" * 36) is None
    assert b.check("a" * 37) is not None


def test_length_bounds_single_and_equal_examples() -> None:
    one = LengthBounds.from_examples(["abcd"])  # sd = its length
    assert (one.low, one.high) == (-4, 12)
    same = LengthBounds.from_examples(["ab", "cd"])  # sd floored at 1
    assert (same.low, same.high) == (0, 4)
    with pytest.raises(ValueError):
        LengthBounds.from_examples([])


# ------------------------------------------------------------------ vote
def test_vote_majority() -> None:
    v = majority_vote(["a", "b", "a", " a "])
    assert (v.winner, v.top, v.total) == ("a", 3, 4)
    assert v.frequency == 0.75


def test_vote_tie_goes_to_shortest() -> None:
    v = majority_vote(["longer", "xy", "longer", "xy"])
    assert v.winner == "xy"
    v = majority_vote(["bb", "aa"])  # equal length: lexicographic, stable
    assert v.winner == "aa"


def test_vote_min_frequency_boundary() -> None:
    samples = ["a", "a", "a"] + [f"o{i}" for i in range(7)]  # 3/10 = 0.3
    assert majority_vote(samples, min_frequency=0.3).winner == "a"
    below = majority_vote(samples, min_frequency=0.31)
    assert below.winner is None
    assert (below.top, below.total) == (3, 10)


def test_vote_ignores_empty_samples() -> None:
    assert majority_vote(["", "  ", "x"]).total == 1
    empty = majority_vote(["", " "])
    assert (empty.winner, empty.total, empty.frequency) == (None, 0, 0.0)


# ------------------------------------------------------------------ balance
def test_balance_classes_downsamples_to_smallest() -> None:
    items = list(range(10))
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 1
    kept, dropped = balance_classes(items, labels, seed=1)
    assert len(kept) == 3 and len(dropped) == 7
    assert sorted(labels[i] for i in kept) == ["a", "b", "c"]
    assert sorted(kept + dropped) == items
    assert kept == sorted(kept) and dropped == sorted(dropped)  # input order kept
    assert balance_classes(items, labels, seed=1) == (kept, dropped)  # seeded


def test_balance_classes_balanced_and_empty() -> None:
    assert balance_classes(["x", "y"], ["a", "b"], seed=0) == (["x", "y"], [])
    assert balance_classes([], [], seed=0) == ([], [])
    with pytest.raises(ValueError):
        balance_classes([1], [], seed=0)


def test_bloom_dedup_catches_every_repeat_and_few_false_ones() -> None:
    from engine.filters import BloomDedup

    bloom = BloomDedup(capacity=20_000, error_rate=0.001)
    size = bloom.nbytes
    new = sum(bloom.add(f"segment number {i}") for i in range(20_000))
    assert new >= 20_000 * (1 - 0.002)  # false duplicates near the configured rate
    assert not any(
        bloom.add(f"Segment  number {i} ") for i in range(0, 20_000, 7)
    )  # normalised repeats
    assert bloom.nbytes == size and not bloom.saturated  # fixed memory
    for i in range(20_000, 20_010):
        bloom.add(f"segment number {i}")
    assert bloom.saturated
