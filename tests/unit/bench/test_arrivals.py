"""Arrival schedules: exact mean rate, the shape of each process, determinism."""

from __future__ import annotations

import statistics

import pytest

from engine.bench.arrivals import arrival_offsets, trace_offsets
from engine.errors import ConfigError


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in zip(offsets, offsets[1:], strict=False)]


@pytest.mark.parametrize("kind", ["constant", "poisson", "gamma"])
def test_mean_rate_is_exactly_the_target(kind: str) -> None:
    offsets = arrival_offsets(kind, 250.0, 1001, seed=7, burstiness=0.5)
    assert offsets[0] == 0.0
    assert offsets == sorted(offsets)
    # 1000 gaps spanning exactly 1000 / 250 s: the realised rate is the target
    assert offsets[-1] == pytest.approx(4.0, rel=1e-12)


def test_constant_gaps_are_equal() -> None:
    gaps = _gaps(arrival_offsets("constant", 20.0, 50))
    assert all(g == pytest.approx(0.05) for g in gaps)


@pytest.mark.parametrize(
    ("kind", "burstiness", "cv"), [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5)]
)
def test_gap_shape(kind: str, burstiness: float, cv: float) -> None:
    """The coefficient of variation of the gaps is 1/sqrt(shape) (1 for Poisson)."""
    gaps = _gaps(arrival_offsets(kind, 100.0, 20_001, seed=3, burstiness=burstiness))
    measured = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert measured == pytest.approx(cv, rel=0.05)


def test_seeded_and_reproducible() -> None:
    a = arrival_offsets("poisson", 10.0, 100, seed=1)
    assert a == arrival_offsets("poisson", 10.0, 100, seed=1)
    assert a != arrival_offsets("poisson", 10.0, 100, seed=2)


def test_bad_settings_name_the_option() -> None:
    with pytest.raises(ConfigError, match="--rate"):
        arrival_offsets("constant", 0.0, 10)
    with pytest.raises(ConfigError, match="--load"):
        arrival_offsets("zipf", 1.0, 10)
    with pytest.raises(ConfigError, match="--burstiness"):
        arrival_offsets("gamma", 1.0, 10, burstiness=0.0)


def test_trace_offsets_are_relative_and_sped_up() -> None:
    assert trace_offsets([100.0, 101.0, 103.0], speed=2.0) == [0.0, 0.5, 1.5]
    with pytest.raises(ConfigError, match="--trace-speed"):
        trace_offsets([1.0], speed=0)


def test_unscaled_poisson_misses_the_rate() -> None:
    """Why gaps are scaled: 1,000 unscaled exponential gaps miss their rate by > 1% ~3 in 4 times."""
    import random

    rng = random.Random(11)
    misses = 0
    for _ in range(400):
        span = sum(rng.expovariate(1.0) for _ in range(1000))
        misses += abs(1000 / span - 1.0) > 0.01
    assert 0.65 < misses / 400 < 0.85
