"""The Prometheus collector and exporter: exposition parsed back with prometheus_client."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from engine.clock import FakeClock
from engine.config import Price
from engine.errors import ConfigError
from engine.metrics import Histogram, Metrics
from engine.metrics.prometheus import (
    LATENCY_BUCKETS_S,
    PREFIX,
    MetricsCollector,
    PrometheusExporter,
    cumulative_buckets,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "observability.md"
PRICE = Price(prompt=2.5, completion=10.0)


def _metrics() -> Metrics:
    """Two endpoints (one priced), errors of two kinds, cache hits, two stages, rows."""
    clock = FakeClock(100.0)
    m = Metrics(clock=clock)
    m.items_total = 50
    m.items_started = 12
    m.items_done = 9
    m.items_skipped = 3
    m.rows.update(kept=7, rejected=2, failed=1)
    strong = m.endpoint("strong")
    for i in range(40):
        strong.on_start()
        clock.advance(0.05)
        strong.on_finish(0.003 * (i + 1) ** 1.7, True, None, 300, 40 + i, 0.001 * (i + 1))
    for kind in ("rate_limited", "rate_limited", "timeout"):
        strong.on_start()
        strong.on_finish(0.0, False, kind, 0, 0, None)
        strong.on_retry()
    strong.on_start()  # one left in flight
    strong.on_cache_hit(120, 30)
    strong.concurrency_limit = 48.0
    strong.rpm_limit = 500.0
    target = m.endpoint("target")
    target.on_start()
    target.on_finish(1.7, True, None, 800, 200, None)
    gen = m.stage("generate")
    gen.calls, gen.ok, gen.failed, gen.parse_errors = 30, 26, 2, 2
    for i in range(26):
        gen.record(0.02 * (i + 1), 100, 20)
    m.stage("judge").calls = 4
    clock.advance(2.0)
    m.mark_progress()
    clock.advance(0.5)
    return m


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(fam: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of ``fam`` named ``fam.name + suffix``, keyed by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name == fam.name + suffix
    }


def _value(fam: Any, suffix: str = "", **labels: str) -> float:
    return _samples(fam, suffix)[tuple(sorted(labels.items()))]


def _render(m: Metrics, prices: dict[str, Price] | None = None) -> tuple[str, str]:
    body, content_type = PrometheusExporter(m, prices=prices).render()
    return body.decode(), content_type


# ------------------------------------------------------------------ exposition
def test_endpoint_counters_and_gauges() -> None:
    m = _metrics()
    text, content_type = _render(m, {"strong": PRICE})
    assert content_type.startswith("text/plain")
    fams = _families(text)
    assert all(name.startswith(PREFIX) for name in fams)
    s, t = m.endpoint("strong"), m.endpoint("target")
    for name, attr in (
        ("requests", "requests"),
        ("requests_ok", "ok"),
        ("requests_cancelled", "cancelled"),
        ("http_429", "http_429"),
        ("retries", "retries"),
        ("cache_hits", "cache_hits"),
        ("prompt_tokens", "prompt_tokens"),
        ("completion_tokens", "completion_tokens"),
        ("cached_prompt_tokens", "cached_prompt_tokens"),
        ("cached_completion_tokens", "cached_completion_tokens"),
    ):
        fam = fams[PREFIX + name]
        assert fam.type == "counter", name
        assert _samples(fam, "_total") == {
            (("endpoint", "strong"),): getattr(s, attr),
            (("endpoint", "target"),): getattr(t, attr),
        }, name
    errors = fams[PREFIX + "request_errors"]
    assert _samples(errors, "_total") == {
        (("endpoint", "strong"), ("kind", "rate_limited")): 2,
        (("endpoint", "strong"), ("kind", "timeout")): 1,
    }
    assert s.http_429 == 2  # the 429 counter agrees with the rate_limited errors
    cost = fams[PREFIX + "cost_usd"]
    assert _samples(cost, "_total") == {
        (("endpoint", "strong"),): pytest.approx(PRICE.cost(s.prompt_tokens, s.completion_tokens))
    }  # the unpriced endpoint has no cost sample
    assert _value(fams[PREFIX + "in_flight"], endpoint="strong") == 1
    assert _value(fams[PREFIX + "in_flight"], endpoint="target") == 0
    assert _value(fams[PREFIX + "max_in_flight"], endpoint="strong") == s.max_in_flight
    assert _samples(fams[PREFIX + "concurrency_limit"]) == {(("endpoint", "strong"),): 48.0}
    assert _samples(fams[PREFIX + "rpm_limit"]) == {(("endpoint", "strong"),): 500.0}
    assert _samples(fams[PREFIX + "tpm_limit"]) == {}  # unknown limits are absent, not 0
    rpm, tpm = s.rates()
    assert rpm > 0 and tpm > 0
    assert _value(fams[PREFIX + "rpm"], endpoint="strong") == pytest.approx(rpm)
    assert _value(fams[PREFIX + "tpm"], endpoint="strong") == pytest.approx(tpm)


def test_stage_and_run_figures() -> None:
    m = _metrics()
    fams = _families(_render(m)[0])
    gen = m.stage("generate")
    for name, attr in (
        ("stage_calls", "calls"),
        ("stage_ok", "ok"),
        ("stage_failed", "failed"),
        ("stage_parse_errors", "parse_errors"),
        ("stage_prompt_tokens", "prompt_tokens"),
        ("stage_completion_tokens", "completion_tokens"),
    ):
        assert _value(fams[PREFIX + name], "_total", stage="generate") == getattr(gen, attr)
    assert _value(fams[PREFIX + "stage_calls"], "_total", stage="judge") == 4
    assert _value(fams[PREFIX + "items_started"], "_total") == 12
    assert _value(fams[PREFIX + "items_done"], "_total") == 9
    assert _value(fams[PREFIX + "items_skipped"], "_total") == 3
    assert _value(fams[PREFIX + "items_planned"]) == 50
    rows = fams[PREFIX + "rows"]
    assert _samples(rows, "_total") == {
        (("kind", "kept"),): 7,
        (("kind", "rejected"),): 2,
        (("kind", "failed"),): 1,
    }
    assert _value(fams[PREFIX + "elapsed_seconds"]) == pytest.approx(m.elapsed())
    assert _value(fams[PREFIX + "idle_seconds"]) == pytest.approx(0.5)
    assert fams[PREFIX + "elapsed_seconds"].type == "gauge"


def _check_histogram(fam: Any, hist: Histogram, **labels: str) -> None:
    key = tuple(sorted(labels.items()))
    buckets = [
        (s.labels["le"], s.value)
        for s in fam.samples
        if s.name == fam.name + "_bucket"
        and tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) == key
    ]
    assert [float(le) for le, _ in buckets] == [*LATENCY_BUCKETS_S, math.inf]
    counts = [n for _, n in buckets]
    assert counts == sorted(counts), "cumulative buckets must not decrease"
    assert counts[-1] == hist.count == _value(fam, "_count", **labels)
    assert _value(fam, "_sum", **labels) == pytest.approx(hist.sum)
    # Each bucket holds the values up to its bound, give or take one internal 5% bucket.
    for bound, n in zip(LATENCY_BUCKETS_S, counts, strict=False):
        assert n >= 0
        if bound >= hist.max:
            assert n == hist.count
        if bound < hist.min:
            assert n == 0


def test_histograms() -> None:
    m = _metrics()
    fams = _families(_render(m)[0])
    latency = fams[PREFIX + "request_latency_seconds"]
    assert latency.type == "histogram"
    _check_histogram(latency, m.endpoint("strong").latency, endpoint="strong")
    _check_histogram(latency, m.endpoint("target").latency, endpoint="target")
    ttft = fams[PREFIX + "ttft_seconds"]
    _check_histogram(ttft, m.endpoint("strong").ttft, endpoint="strong")
    _check_histogram(ttft, m.endpoint("target").ttft, endpoint="target")  # empty: all zero
    assert _value(ttft, "_count", endpoint="target") == 0
    stage = fams[PREFIX + "stage_latency_seconds"]
    _check_histogram(stage, m.stage("generate").latency, stage="generate")
    # The strong endpoint's latencies straddle the ladder: some buckets partly filled.
    counts = {v for k, v in _samples(latency, "_bucket").items() if ("endpoint", "strong") in k}
    assert len(counts) > 5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=400.0), min_size=1, max_size=60))
def test_cumulative_buckets_match_exact_counts(values: list[float]) -> None:
    hist = Histogram()
    for v in values:
        hist.record(v)
    out = cumulative_buckets(hist)
    assert out[-1] == ("+Inf", float(len(values)))
    for (le, n), bound in zip(out, LATENCY_BUCKETS_S, strict=False):
        assert float(le) == bound
        exact = sum(1 for v in values if v <= bound)
        # Only values within one internal bucket (5%) of the bound may land on either side.
        near = sum(1 for v in values if bound / 1.06 <= v <= bound * 1.06)
        assert abs(n - exact) <= near, (bound, n, exact)


def test_empty_metrics_expose_families_without_samples() -> None:
    fams = _families(_render(Metrics(clock=FakeClock()))[0])
    assert _samples(fams[PREFIX + "requests"], "_total") == {}
    assert _samples(fams[PREFIX + "request_latency_seconds"], "_bucket") == {}
    assert _samples(fams[PREFIX + "items_planned"]) == {}  # total unknown
    assert _value(fams[PREFIX + "items_done"], "_total") == 0
    assert _value(fams[PREFIX + "rows"], "_total", kind="kept") == 0


def test_scrape_reads_current_state() -> None:
    m = _metrics()
    exporter = PrometheusExporter(m)
    before = _value(_families(exporter.render()[0].decode())[PREFIX + "requests"], "_total",
                    endpoint="strong")  # fmt: skip
    m.endpoint("strong").on_start()
    m.endpoint("new").on_start()
    fams = _families(exporter.render()[0].decode())
    assert _value(fams[PREFIX + "requests"], "_total", endpoint="strong") == before + 1
    assert _value(fams[PREFIX + "requests"], "_total", endpoint="new") == 1


def test_openmetrics_when_asked() -> None:
    body, content_type = PrometheusExporter(_metrics()).render(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )
    assert content_type.startswith("application/openmetrics-text")
    fams = {f.name: f for f in openmetrics_families(body.decode())}  # type: ignore[no-untyped-call]
    assert _value(fams[PREFIX + "requests"], "_total", endpoint="target") == 1


def test_private_registries() -> None:
    """Two exporters in one process neither clash nor share values."""
    a, b = Metrics(clock=FakeClock()), Metrics(clock=FakeClock())
    a.endpoint("x").on_start()
    exp_a, exp_b = PrometheusExporter(a), PrometheusExporter(b)
    assert exp_a.registry is not exp_b.registry
    fams_b = _families(exp_b.render()[0].decode())
    assert _samples(fams_b[PREFIX + "requests"], "_total") == {}
    fams_a = _families(exp_a.render()[0].decode())
    assert _value(fams_a[PREFIX + "requests"], "_total", endpoint="x") == 1


# --------------------------------------------------------------------- errors
def test_missing_prometheus_client_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError) as info:
        PrometheusExporter(Metrics())
    assert info.value.hint == "pip install 'synth-engine[metrics]'"
    with pytest.raises(ConfigError):
        MetricsCollector(Metrics())


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_out_of_range(port: int) -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        PrometheusExporter(Metrics(), port=port)


# ----------------------------------------------------------------------- HTTP
async def test_serves_metrics_on_loopback() -> None:
    m = _metrics()
    async with PrometheusExporter(m, port=0) as exporter:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", exporter.url)
        assert exporter.port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(exporter.url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                text = await resp.text()
            async with session.get(exporter.url.replace("/metrics", "/other")) as resp:
                assert resp.status == 404
        fams = _families(text)
        assert _value(fams[PREFIX + "requests"], "_total", endpoint="strong") == (
            m.endpoint("strong").requests
        )
        # A taken port is a clear config error, not a traceback.
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            await PrometheusExporter(m, port=exporter.port).start()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(exporter.url)  # closed on exit


# ----------------------------------------------------------------------- docs
def test_every_metric_is_documented() -> None:
    """docs/observability.md names every exported metric family and its labels."""
    doc = DOC.read_text()
    m = _metrics()
    fams = _families(_render(m, {"strong": PRICE})[0])
    assert len(fams) >= 30
    for name, fam in fams.items():
        shown = name + ("_total" if fam.type == "counter" else "")
        assert f"`{shown}`" in doc, shown
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        row = next(line for line in doc.splitlines() if f"`{shown}`" in line)
        for label in labels:
            assert f"`{label}`" in row, (shown, label)
