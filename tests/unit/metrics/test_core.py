"""Histogram, EndpointStats, StageStats and the Metrics registry."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from engine.clock import FakeClock
from engine.metrics import EndpointStats, Histogram, Metrics, StageStats


def _exact(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


# ------------------------------------------------------------------ Histogram
def test_empty_histogram() -> None:
    h = Histogram()
    assert h.count == 0
    assert h.sum == 0.0
    assert h.percentile(50) == 0.0
    assert h.percentile(100) == 0.0
    d = h.to_dict()
    assert d == {
        "p50": 0.0,
        "p90": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "max": 0.0,
        "mean": 0.0,
        "count": 0,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_within_bucket_precision(seed: int) -> None:
    rng = random.Random(seed)
    # Log-normal latencies around 200 ms with a long tail, plus some sub-0.1 ms values.
    values = [rng.lognormvariate(math.log(0.2), 1.0) for _ in range(5000)]
    h = Histogram()
    for v in values:
        h.record(v)
    assert h.count == len(values)
    assert h.sum == pytest.approx(sum(values))
    for q in (1, 10, 25, 50, 75, 90, 95, 99, 99.9):
        exact = _exact(values, q)
        assert h.percentile(q) == pytest.approx(exact, rel=0.05), q
    assert h.percentile(100) == max(values)
    assert h.percentile(0) == pytest.approx(min(values), rel=0.05)


def test_single_value_is_exact() -> None:
    h = Histogram()
    h.record(0.123)
    for q in (0, 50, 99, 100):
        assert h.percentile(q) == 0.123


def test_extremes_and_bad_values() -> None:
    h = Histogram()
    h.record(-1.0)  # counts as 0
    h.record(0.0)
    h.record(5e-5)
    h.record(7200.0)  # beyond the last bound
    h.record(float("inf"))
    h.record(float("nan"))  # ignored
    assert h.count == 5
    assert h.percentile(100) == math.inf
    assert h.percentile(50) <= 1e-4
    assert h.min == 0.0


def test_to_dict_in_milliseconds() -> None:
    h = Histogram()
    for v in (0.010, 0.020, 0.030, 0.040):
        h.record(v)
    d = h.to_dict()
    assert d["count"] == 4
    assert d["mean"] == pytest.approx(25.0)
    assert d["max"] == pytest.approx(40.0)
    assert d["p50"] == pytest.approx(20.0, rel=0.05)
    assert set(d) == {"p50", "p90", "p95", "p99", "max", "mean", "count"}


def test_merge_equals_recording_everything() -> None:
    rng = random.Random(7)
    a_vals = [rng.uniform(0.001, 2.0) for _ in range(1000)]
    b_vals = [rng.uniform(0.5, 30.0) for _ in range(500)]
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in a_vals:
        a.record(v)
        both.record(v)
    for v in b_vals:
        b.record(v)
        both.record(v)
    a.merge(b)
    assert a.buckets == both.buckets
    assert a.count == 1500
    assert a.sum == pytest.approx(both.sum)
    assert a.min == both.min
    assert a.max == both.max
    for q in (50, 90, 99):
        assert a.percentile(q) == pytest.approx(_exact(a_vals + b_vals, q), rel=0.05)


def test_merge_empty_keeps_state() -> None:
    a = Histogram()
    a.record(1.0)
    a.merge(Histogram())
    assert a.count == 1
    assert a.min == 1.0
    assert a.max == 1.0
    e = Histogram()
    e.merge(a)
    assert e.percentile(50) == 1.0


# -------------------------------------------------------------- EndpointStats
def test_counters() -> None:
    clock = FakeClock()
    s = EndpointStats("strong", clock=clock)
    s.on_start()
    s.on_finish(0.5, True, None, 100, 20, 0.1)
    s.on_start()
    s.on_finish(0.0, False, "rate_limited", 0, 0, None)
    s.on_retry()
    s.on_start()
    s.on_finish(0.0, False, "timeout", 0, 0, None)
    s.on_start()
    s.on_finish(0.0, False, "cancelled", 0, 0, None)
    s.on_cache_hit(50, 10)
    assert s.requests == 4
    assert s.ok == 1
    assert s.errors == {"rate_limited": 1, "timeout": 1}
    assert s.total_errors == 2
    assert s.cancelled == 1
    assert s.http_429 == 1
    assert s.retries == 1
    assert s.cache_hits == 1
    assert (s.prompt_tokens, s.completion_tokens) == (100, 20)
    assert (s.cached_prompt_tokens, s.cached_completion_tokens) == (50, 10)
    assert s.latency.count == 1
    assert s.ttft.count == 1
    assert s.in_flight == 0
    assert s.max_in_flight == 1


def test_mean_in_flight_is_time_weighted() -> None:
    clock = FakeClock(1000.0)
    s = EndpointStats("e", clock=clock)
    assert s.mean_in_flight == 0.0
    # 0..2 s: one in flight; 2..3 s: three in flight; 3..4 s: one in flight.
    s.on_start()
    clock.advance(2.0)
    s.on_start()
    s.on_start()
    clock.advance(1.0)
    s.on_finish(1.0, True, None, 0, 0, None)
    s.on_finish(1.0, True, None, 0, 0, None)
    clock.advance(1.0)
    s.on_finish(4.0, True, None, 0, 0, None)
    assert s.max_in_flight == 3
    assert s.mean_in_flight == pytest.approx((2 * 1 + 1 * 3 + 1 * 1) / 4.0)
    # Idle time afterwards does not dilute the mean.
    clock.advance(100.0)
    assert s.mean_in_flight == pytest.approx(1.5)
    # While busy, the mean runs up to now.
    s.on_start()
    s.on_start()
    clock.advance(4.0)
    # area 6 (first span) + 0 over the idle gap + 2*4; span 4 + 100 + 4
    assert s.mean_in_flight == pytest.approx((6.0 + 8.0) / 108.0)


def test_rates_window() -> None:
    clock = FakeClock(500.0)
    s = EndpointStats("e", clock=clock)
    assert s.rates() == (0.0, 0.0)
    # 2 requests a second of 100 tokens each, for 120 s.
    for _ in range(120):
        for _ in range(2):
            s.on_start()
            s.on_finish(0.1, True, None, 60, 40, None)
        clock.advance(1.0)
    rpm, tpm = s.rates(60)
    assert rpm == pytest.approx(120.0, rel=0.05)
    assert tpm == pytest.approx(12000.0, rel=0.05)
    rpm10, _ = s.rates(10)
    assert rpm10 == pytest.approx(120.0, rel=0.15)
    # Nothing finishes for a while: the window empties.
    clock.advance(30.0)
    rpm, _ = s.rates(60)
    assert rpm == pytest.approx(60.0, rel=0.05)
    clock.advance(61.0)
    assert s.rates(60) == (0.0, 0.0)


def test_rates_early_in_the_run_are_not_diluted() -> None:
    clock = FakeClock(0.0)
    s = EndpointStats("e", clock=clock)
    s.on_start()
    clock.advance(5.0)
    for _ in range(10):
        s.on_start()
        s.on_finish(0.1, True, None, 10, 0, None)
    rpm, tpm = s.rates(60)
    # 10 finished over the 5 s since the first request.
    assert rpm == pytest.approx(120.0)
    assert tpm == pytest.approx(1200.0)


def test_rates_ring_reuses_old_slots() -> None:
    clock = FakeClock(0.0)
    s = EndpointStats("e", clock=clock)
    s.on_start()
    s.on_finish(0.1, True, None, 1000, 0, None)
    clock.advance(600.0)  # same ring slot, a different second
    s.on_start()
    s.on_finish(0.1, True, None, 1, 0, None)
    rpm, tpm = s.rates(60)
    assert rpm == pytest.approx(1.0)
    assert tpm == pytest.approx(1.0)


# ----------------------------------------------------------------- StageStats
def test_stage_stats() -> None:
    st = StageStats("generate")
    st.calls += 2
    st.ok += 1
    st.parse_errors += 1
    st.record(0.2, 10, 5)
    assert st.latency.count == 1
    assert (st.prompt_tokens, st.completion_tokens) == (10, 5)
    snap = st.snapshot()
    assert snap["calls"] == 2
    assert snap["parse_errors"] == 1


# -------------------------------------------------------------------- Metrics
def test_registry_creates_once() -> None:
    clock = FakeClock(10.0)
    m = Metrics(clock=clock)
    assert m.endpoint("a") is m.endpoint("a")
    assert m.stage("s") is m.stage("s")
    assert m.endpoint("a").clock is clock
    assert set(m.endpoints) == {"a"}
    assert set(m.stages) == {"s"}


def test_elapsed_and_progress() -> None:
    clock = FakeClock(10.0)
    m = Metrics(clock=clock)
    assert m.started_at == 10.0
    assert m.last_progress_at == 10.0
    clock.advance(3.5)
    assert m.elapsed() == pytest.approx(3.5)
    m.add_row("kept")
    assert m.rows == {"kept": 1, "rejected": 0, "failed": 0}
    assert m.last_progress_at == 13.5
    clock.advance(1.0)
    m.mark_progress()
    assert m.last_progress_at == 14.5


def test_two_metrics_share_nothing() -> None:
    a, b = Metrics(clock=FakeClock()), Metrics(clock=FakeClock())
    a.endpoint("x").on_start()
    a.rows["kept"] += 1
    assert "x" not in b.endpoints
    assert b.rows["kept"] == 0


def test_snapshot_is_json() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    m.items_total = 10
    m.items_started = 3
    m.items_done = 2
    m.items_skipped = 1
    e = m.endpoint("strong")
    e.on_start()
    clock.advance(0.3)
    e.on_finish(0.3, True, None, 12, 34, 0.05)
    e.on_start()
    e.on_finish(0.0, False, "server_error", 0, 0, None)
    e.concurrency_limit = 8.0
    m.stage("gen").calls += 1
    snap = m.snapshot()
    decoded = orjson.loads(orjson.dumps(snap))
    assert decoded == snap
    assert decoded["items"] == {"total": 10, "started": 3, "done": 2, "skipped": 1}
    ep = decoded["endpoints"]["strong"]
    assert ep["requests"] == 2
    assert ep["errors"] == {"server_error": 1}
    assert ep["latency_ms"]["count"] == 1
    assert ep["concurrency_limit"] == 8.0
    assert decoded["stages"]["gen"]["calls"] == 1
    assert decoded["elapsed_s"] == pytest.approx(0.3)


def test_activity_counts_answered_calls_as_well_as_rows() -> None:
    """The watchdog's clock: a prepare phase answers calls without writing rows."""
    clock = FakeClock(100.0)
    m = Metrics(clock=clock)
    assert m.last_activity_at() == 100.0  # created
    ep = m.endpoint("strong")
    clock.advance(5.0)
    ep.on_start()
    ep.on_finish(0.1, False, "timeout", 0, 0, None)  # a failure is not activity
    assert m.last_activity_at() == 100.0
    ep.on_start()
    ep.on_finish(0.1, True, None, 10, 5, None)
    assert m.last_activity_at() == 105.0 and m.last_progress_at == 100.0
    clock.advance(5.0)
    m.endpoint("judge").on_cache_hit(10, 5)  # replayed from the cache on resume
    assert m.last_activity_at() == 110.0
    clock.advance(5.0)
    m.add_row("kept")
    assert m.last_activity_at() == 115.0
