"""Figures from records: percentiles, TPOT/ITL definitions, windows, SLOs, goodput."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from engine.bench.metrics import (
    Record,
    evaluate_slos,
    in_window,
    itl_samples,
    meets_slos,
    percentiles,
    summarize,
    weighted_percentiles,
)


def test_percentiles_match_numpy_linear() -> None:
    rng = random.Random(5)
    xs = [rng.expovariate(1.0) for _ in range(1001)]
    p = percentiles(xs, scale=1.0)
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9)):
        assert p[name] == pytest.approx(float(np.percentile(xs, q)), abs=1e-3)
    assert p["mean"] == pytest.approx(float(np.mean(xs)), abs=1e-3)
    assert p["stddev"] == pytest.approx(float(np.std(xs)), abs=1e-3)
    assert p["count"] == 1001
    assert percentiles([])["p50"] is None


def test_weighted_percentiles_equal_repeated_values() -> None:
    w = weighted_percentiles([(1.0, 3.0), (2.0, 1.0)], scale=1.0)
    assert w["p50"] == 1.0 and w["p90"] == 2.0
    assert w["mean"] == pytest.approx(1.25)
    assert w["count"] == 4


def _streamed(index: int, sent: float, gaps: list[float], tokens: int, ttft: float = 0.1) -> Record:
    first = sent + ttft
    chunks = [first]
    for g in gaps:
        chunks.append(chunks[-1] + g)
    return Record(
        index=index,
        intended=sent,
        sent=sent,
        first_token=first,
        last_token=chunks[-1],
        end=chunks[-1] + 0.001,
        ok=True,
        output_tokens=tokens,
        chunks=chunks,
    )


def test_tpot_and_itl_one_token_per_chunk() -> None:
    r = _streamed(0, 0.0, [0.02] * 15, 16)
    assert r.tpot == pytest.approx(0.02)
    assert [round(v, 9) for v, _ in itl_samples(r)] == [0.02] * 15
    assert r.ttft == pytest.approx(0.1)


def test_itl_spreads_multi_token_reads() -> None:
    # 3 reads after the first, 9 tokens after the first: 3 tokens per read
    r = _streamed(0, 0.0, [0.03, 0.06, 0.03], 10)
    samples = itl_samples(r)
    assert [(round(v, 9), w) for v, w in samples] == [(0.01, 3.0), (0.02, 3.0), (0.01, 3.0)]
    assert r.tpot == pytest.approx(0.12 / 9)
    # with per-read token counts (a tokenizer): each gap over its own read's tokens
    r.chunk_tokens = [1, 1, 6, 2]
    assert [(round(v, 9), w) for v, w in itl_samples(r)] == [(0.03, 1.0), (0.01, 6.0), (0.015, 2.0)]


def test_lag_and_latency_from_intended() -> None:
    r = Record(index=0, intended=1.0, sent=1.5, end=1.7, ok=True, first_token=1.6)
    assert r.lag == pytest.approx(0.5)
    assert r.latency == pytest.approx(0.2)
    assert r.latency_intended == pytest.approx(0.7)
    assert r.ttft == pytest.approx(0.1)
    assert r.ttft_intended == pytest.approx(0.6)


def test_window_excludes_warmup_and_cooldown() -> None:
    recs = [Record(index=i, intended=float(i)) for i in range(11)]
    assert [r.index for r in in_window(recs, 0.0, 2.0, 3.0)] == [2, 3, 4, 5, 6, 7]


def test_summary_rates_and_goodput() -> None:
    # 101 requests sent every 10 ms, each answered 50 ms later; one in 10 takes 500 ms
    recs = []
    for i in range(101):
        t = i * 0.01
        slow = i % 10 == 5
        recs.append(Record(index=i, intended=t, sent=t, end=t + (0.5 if slow else 0.05), ok=True))
    s = summarize(recs, start=0.0, slos={"latency_ms": 100.0}, slo_percentile=90.0)
    assert s["send_rate_per_s"] == pytest.approx(100.0)
    assert s["window"]["requests"] == 101
    assert s["slo"]["good_requests"] == 91
    assert s["goodput_per_s"] == pytest.approx(s["completed_per_s"] * 91 / 101, rel=1e-3)
    assert s["slo"]["met"] is True  # p90 of latency is 50 ms
    strict = summarize(recs, start=0.0, slos={"latency_ms": 100.0}, slo_percentile=95.0)
    assert strict["slo"]["met"] is False
    assert strict["slo"]["checks"]["latency_ms"]["value"] > 100


def test_failures_count_against_slos() -> None:
    recs = [Record(index=i, intended=0.0, sent=0.0, end=0.01, ok=True) for i in range(95)]
    recs += [
        Record(index=95 + i, intended=0.0, sent=0.0, end=1.0, ok=False, error="server_error")
        for i in range(5)
    ]
    verdict = evaluate_slos(recs, {"latency_ms": 1000.0}, 99.0)
    assert verdict["met"] is False
    assert verdict["checks"]["latency_ms"]["value"] is None  # infinite: failures
    assert evaluate_slos(recs, {"latency_ms": 1000.0}, 90.0)["met"] is True
    assert not meets_slos(recs[-1], {"latency_ms": 1000.0})


def test_itl_slo_uses_the_worst_gap_per_request() -> None:
    r = _streamed(0, 0.0, [0.01, 0.01, 0.2], 4)
    assert meets_slos(r, {"itl_ms": 250.0})
    assert not meets_slos(r, {"itl_ms": 100.0})
    assert meets_slos(r, {"tpot_ms": 100.0})  # mean per token: 220 / 3 ms
    assert not math.isnan(r.tpot or math.nan)
