"""TokenBucket: a float reference model, exact ``time_until``, and window safety of ``for_limit``."""

from __future__ import annotations

import bisect
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import FakeClock
from engine.llm.bucket import TokenBucket

# Level agreement between the bucket and the reference model.
TOL = 1e-6
# "Slightly before" in the exactness check: far above float noise, far below any wait.
BEFORE = 1e-4


# ------------------------------------------------------------------ basics


def test_rejects_non_positive_shape() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, -1.0)
    with pytest.raises(ValueError):
        TokenBucket.for_limit(0)
    b = TokenBucket(1.0, 1.0, clock=FakeClock())
    with pytest.raises(ValueError):
        b.resize(0, 1.0)


def test_starts_full_and_caps_initial_level() -> None:
    fake = FakeClock(10.0)
    assert TokenBucket(5.0, 1.0, clock=fake).level == 5.0
    assert TokenBucket(5.0, 1.0, clock=fake, level=99.0).level == 5.0
    assert TokenBucket(5.0, 1.0, clock=fake, level=-3.0).level == -3.0


def test_for_limit_shape() -> None:
    fake = FakeClock()
    b = TokenBucket.for_limit(600, clock=fake)  # one second of burst
    assert b.capacity == pytest.approx(10.0)
    assert b.rate == pytest.approx(590 / 60)
    b = TokenBucket.for_limit(10, clock=fake)  # min_burst wins
    assert b.capacity == 1.0
    assert b.rate == pytest.approx(9 / 60)
    b = TokenBucket.for_limit(1, clock=fake)  # burst capped at half the limit
    assert b.capacity == 0.5
    assert b.rate == pytest.approx(0.5 / 60)
    # Whatever the shape, burst + one minute of refill is exactly the limit.
    for limit in (1.0, 3.0, 10.0, 59.0, 61.0, 600.0, 1e6):
        for burst_s in (0.5, 1.0, 5.0):
            b = TokenBucket.for_limit(limit, burst_s=burst_s, clock=fake)
            assert b.capacity + 60 * b.rate == pytest.approx(limit)
            b.resize_for_limit(limit * 2, burst_s=burst_s)
            assert b.capacity + 60 * b.rate == pytest.approx(limit * 2)


def test_time_until_above_capacity_is_infinite_and_capped_take_goes_into_debt() -> None:
    fake = FakeClock()
    b = TokenBucket(10.0, 2.0, clock=fake, level=4.0)
    assert b.time_until(10.5) == math.inf
    assert b.time_until_capped(25.0) == pytest.approx(3.0)  # until full
    assert not b.take_capped(25.0)
    fake.advance(3.0)
    assert b.take_capped(25.0)
    assert b.level == pytest.approx(-15.0)
    assert b.time_until(1.0) == pytest.approx(8.0)


def test_debt_refund_clamp_resize() -> None:
    fake = FakeClock(3.0)
    b = TokenBucket(10.0, 1.0, clock=fake)
    b.charge(25.0)
    assert b.level == pytest.approx(-15.0)
    assert not b.try_take(0.5)
    b.refund(100.0)
    assert b.level == 10.0  # never above capacity
    b.clamp(4.0)
    assert b.level == 4.0
    b.clamp(7.0)  # never raises it
    assert b.level == 4.0
    b.resize(2.0, 5.0)
    assert b.level == 2.0 and b.capacity == 2.0 and b.rate == 5.0
    b.charge(2.0)
    fake.advance(0.2)
    assert b.level == pytest.approx(1.0)


# ------------------------------------------------------- reference model

ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 30.0)),
        st.tuples(st.just("advance"), st.floats(0.0, 1e-3)),
        st.tuples(st.just("take"), st.floats(0.0, 1.2)),
        st.tuples(st.just("take_capped"), st.floats(0.0, 3.0)),
        st.tuples(st.just("charge"), st.floats(0.0, 100.0)),
        st.tuples(st.just("refund"), st.floats(0.0, 100.0)),
        st.tuples(st.just("clamp"), st.floats(-50.0, 1000.0)),
        st.tuples(st.just("resize"), st.floats(0.5, 1000.0), st.floats(0.01, 1000.0)),
        st.tuples(st.just("wait_take"), st.floats(0.0, 1.0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(0.0, 1e6),
    capacity=st.floats(0.5, 1000.0),
    rate=st.floats(0.01, 1000.0),
    start_frac=st.floats(-2.0, 1.0),
    program=ops,
)
def test_matches_reference_model(
    start: float,
    capacity: float,
    rate: float,
    start_frac: float,
    program: list[tuple[str, float] | tuple[str, float, float]],
) -> None:
    fake = FakeClock(start)
    b = TokenBucket(capacity, rate, clock=fake, level=start_frac * capacity)
    cap, r, m = capacity, rate, start_frac * capacity  # the model

    def advance(dt: float) -> None:
        nonlocal m
        before = fake.now
        fake.advance(dt)
        m = min(cap, m + (fake.now - before) * r)  # the elapsed time the clock really moved

    def check_take(n: float, need: float, took: bool) -> None:
        # Far from the boundary the outcome is decided; at it, float noise may go either way.
        if m >= need + TOL:
            assert took, (m, need)
        elif m < need - TOL - 1e-6 * r:
            assert not took, (m, need)

    for op in program:
        if op[0] == "advance":
            advance(op[1])
        elif op[0] == "take":
            n = op[1] * cap
            took = b.try_take(n)
            check_take(n, n, took)
            if took:
                m -= n
        elif op[0] == "take_capped":
            n = op[1] * cap
            took = b.take_capped(n)
            check_take(n, min(n, cap), took)
            if took:
                m -= n
        elif op[0] == "charge":
            b.charge(op[1])
            m -= op[1]
        elif op[0] == "refund":
            b.refund(op[1])
            m = min(cap, m + op[1])
        elif op[0] == "clamp":
            b.clamp(op[1])
            m = min(m, op[1])
        elif op[0] == "resize":
            assert len(op) == 3
            b.resize(op[1], op[2])
            cap, r = op[1], op[2]
            m = min(m, cap)
        else:  # wait_take: time_until is exact
            n = op[1] * cap
            d = b.time_until(n)
            expected = max(0.0, (n - m) / r)
            assert d == pytest.approx(expected, rel=1e-9, abs=1e-6 + TOL / r)
            if d > BEFORE:
                advance(d - BEFORE)
                assert not b.try_take(n), "available slightly before time_until said"
                advance(BEFORE)
            else:
                advance(d)
            assert b.try_take(n), "not available after waiting time_until"
            m -= n
        assert b.level == pytest.approx(m, abs=TOL), op
        assert b.capacity == cap and b.rate == r


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0.0, 1e7),
    capacity=st.floats(0.5, 1e5),
    rate=st.floats(0.01, 1e5),
    level=st.floats(-1e5, 1e5),
    frac=st.floats(0.0, 1.0),
)
def test_time_until_is_exact(
    start: float, capacity: float, rate: float, level: float, frac: float
) -> None:
    """After waiting exactly time_until(n), n can be taken; a little earlier it cannot."""
    n = frac * capacity
    for early in (False, True):
        fake = FakeClock(start)
        b = TokenBucket(capacity, rate, clock=fake, level=level)
        d = b.time_until(n)
        if early:
            if d <= BEFORE:
                continue
            fake.advance(d - BEFORE)
            assert not b.try_take(n)
            fake.advance(BEFORE)
        else:
            fake.advance(d)
        assert b.try_take(n)


# ------------------------------------------------------------ window safety


def _max_in_window(times: list[float], window: float = 60.0) -> int:
    """Largest number of events in any closed window [t, t + window] (times sorted)."""
    return max((bisect.bisect_right(times, t + window) - i for i, t in enumerate(times)), default=0)


def _greedy(
    b: TokenBucket, fake: FakeClock, rng: random.Random, horizon: float, gap: float, idle: float
) -> list[float]:
    """Arrive at random times; at each arrival take one unit while the bucket allows."""
    taken: list[float] = []
    end = fake.now + horizon
    while True:
        dt = rng.uniform(0.0, idle) if rng.random() < 0.05 else rng.uniform(0.0, gap)
        if fake.now + dt >= end:
            break
        fake.advance(dt)
        while b.try_take(1):
            taken.append(fake.now)
    return taken


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(10, 10_000),
    start=st.floats(0.0, 1e6),
    seed=st.integers(0, 2**32 - 1),
    bursty=st.booleans(),
)
def test_for_limit_never_overshoots_a_window_and_uses_the_quota(
    limit: int, start: float, seed: int, bursty: bool
) -> None:
    rng = random.Random(seed)  # hypothesis reports the seed of a failing example
    horizon = 300.0  # five simulated minutes
    fake = FakeClock(start)
    b = TokenBucket.for_limit(limit, clock=fake)
    # Arrivals are dense enough that the bucket cannot overflow between two of them
    # while a unit is waiting to be taken (or lose more than 1% of a unit when the burst
    # is the one-unit minimum), so the taker is as greedy as a real waiter queue.
    gap = min(0.5, max(b.capacity - 1.0, 0.01) / b.rate)
    # Bursty arrivals sometimes idle long enough for the bucket to fill, then pounce.
    taken = _greedy(b, fake, rng, horizon, gap=gap, idle=20.0 if bursty else gap)
    assert _max_in_window(taken) <= limit
    if not bursty:
        # All the bucket allows (a burst, then the refill), less the start and end gaps,
        # the unit left over at the end and <= 1% of a unit per take lost to overflow ...
        allowed = b.capacity + horizon * b.rate
        assert len(taken) >= 0.99 * (allowed - 2 * gap * b.rate) - 1
        # ... which is >= 97% of the quota (limit/min over the run), except where the
        # one-unit minimum burst costs more than 1/60 of the quota (limit < 60/min).
        if limit >= 100:
            assert len(taken) >= 0.97 * limit * horizon / 60.0
