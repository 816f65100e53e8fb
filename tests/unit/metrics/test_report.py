"""build_report, write_report (atomic) and render_summary."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from engine.clock import FakeClock
from engine.config import Price
from engine.metrics import Metrics, Report, build_report, render_summary, write_report


def _metrics() -> Metrics:
    clock = FakeClock(50.0)
    m = Metrics(clock=clock)
    m.items_total = 200
    m.items_done = 180
    m.items_skipped = 20
    m.rows.update(kept=120, rejected=30, failed=4)
    strong = m.endpoint("strong")
    for _ in range(100):
        strong.on_start()
        clock.advance(0.1)
        strong.on_finish(0.1, True, None, 500, 100, 0.02)
    for _ in range(3):
        strong.on_start()
        strong.on_finish(0.0, False, "rate_limited", 0, 0, None)
        strong.on_retry()
    strong.concurrency_limit = 16.0
    strong.rpm_limit = 600.0
    target = m.endpoint("target")
    target.on_cache_hit(10, 10)
    target.on_start()
    target.on_finish(2.0, True, None, 1000, 800, None)
    gen = m.stage("generate")
    gen.calls, gen.ok, gen.failed, gen.parse_errors = 110, 100, 4, 6
    clock.advance(10.0)  # 20 s wall time in all
    return m


def test_build_report() -> None:
    r = build_report(
        _metrics(), method="evol_instruct", simulated=True, stop_reason=None, method_report={"k": 3}
    )
    assert r.simulated is True
    assert r.method == "evol_instruct"
    assert r.wall_s == pytest.approx(20.0)
    assert (r.items.total, r.items.done, r.items.skipped) == (200, 180, 20)
    assert (r.rows.kept, r.rows.rejected, r.rows.failed) == (120, 30, 4)
    s = r.endpoints["strong"]
    assert s.requests == 103
    assert s.ok == 100
    assert s.http_429 == 3
    assert s.retries == 3
    assert s.errors == {"rate_limited": 3}
    assert s.latency_ms.count == 100
    assert s.latency_ms.p50 == pytest.approx(100.0, rel=0.05)
    assert s.ttft_ms.p99 == pytest.approx(20.0, rel=0.05)
    assert s.concurrency_limit == 16.0
    assert s.rpm_limit == 600.0
    assert s.tpm_limit is None
    assert s.max_in_flight == 1
    assert s.mean_in_flight == pytest.approx(1.0)
    assert s.requests_per_s == pytest.approx(103 / 20.0)
    t = r.endpoints["target"]
    assert t.cache_hits == 1
    assert t.prompt_tokens == 1000  # cache hits are not paid tokens
    assert r.stages["generate"].parse_errors == 6
    paid = 100 * 600 + 1800
    assert r.tokens_per_kept_row == pytest.approx(paid / 120)
    assert r.method_report == {"k": 3}
    assert r.stop_reason is None


def test_no_kept_rows_means_no_tokens_per_row() -> None:
    r = build_report(Metrics(clock=FakeClock()), method="m", simulated=False, stop_reason="stopped")
    assert r.tokens_per_kept_row is None
    assert r.endpoints == {}
    assert r.method_report == {}


def test_write_report_atomic_and_round_trips(tmp_path: Path) -> None:
    r = build_report(
        _metrics(),
        method="m",
        simulated=True,
        stop_reason="stopped",
        method_report={"odd": Path("x"), "n": 1},
    )
    path = tmp_path / "report.json"
    path.write_text("old")
    write_report(path, r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp file left
    raw = json.loads(path.read_text())
    assert raw["simulated"] is True
    assert raw["stop_reason"] == "stopped"
    assert raw["method_report"] == {"odd": "x", "n": 1}
    assert set(raw["endpoints"]["strong"]["latency_ms"]) == {
        "p50", "p90", "p95", "p99", "max", "mean", "count"
    }  # fmt: skip
    for key in (
        "requests", "ok", "errors", "http_429", "retries", "cache_hits", "prompt_tokens",
        "completion_tokens", "latency_ms", "ttft_ms", "mean_in_flight", "max_in_flight",
        "concurrency_limit", "rpm_limit", "tpm_limit", "requests_per_s",
    ):  # fmt: skip
        assert key in raw["endpoints"]["strong"], key
    back = msgspec.json.decode(path.read_bytes(), type=Report)
    assert back.rows.kept == 120
    assert back.endpoints["strong"].http_429 == 3


def test_write_report_failure_leaves_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("engine.metrics.report.os.replace", boom)
    with pytest.raises(OSError):
        write_report(path, build_report(_metrics(), method="m", simulated=False, stop_reason=None))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_summary_simulated() -> None:
    r = build_report(_metrics(), method="evol_instruct", simulated=True, stop_reason=None)
    text = render_summary(r)
    lines = text.splitlines()
    assert "SIMULATED ENDPOINT" in lines[0]
    assert "evol_instruct" in lines[0]
    assert len(lines) <= 40
    assert "[" not in text  # no rich markup
    assert "kept 120" in text
    assert "rejected 30" in text
    assert "failed 4" in text
    assert "200/200" in text
    assert "20 resumed" in text
    assert "20.0s" in text
    assert "9.00 items/s" in text
    assert f"{(100 * 600 + 1800) / 120:.1f}" in text
    strong = next(line for line in lines if line.strip().startswith("strong"))
    assert strong.split() == [
        "strong",
        "103",
        "3",
        "3",
        "3",
        "0",
        "100",
        "100",
        "1.0/1",
        "50.0k/10.0k",
    ]
    generate = next(line for line in lines if line.strip().startswith("generate"))
    assert generate.split() == ["generate", "110", "100", "4", "6"]
    # Columns are aligned: the header and every endpoint row have the same width.
    header = next(line for line in lines if line.strip().startswith("endpoint"))
    assert len(header) == len(strong)


def test_summary_real_and_stopped() -> None:
    r = build_report(_metrics(), method="m", simulated=False, stop_reason="budget")
    text = render_summary(r)
    assert "SIMULATED" not in text
    assert "budget" in text


def test_summary_stays_on_one_screen() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    for i in range(30):
        m.endpoint(f"endpoint-{i}").on_start()
        m.stage(f"stage-{i}").calls += 1
    clock.advance(1.0)
    text = render_summary(build_report(m, method="m", simulated=True, stop_reason=None))
    assert len(text.splitlines()) <= 40
    assert "more endpoints" in text
    assert "more stages" in text


# ----------------------------------------------------------------------- cost
STRONG = Price(prompt=2.5, completion=10.0)
TARGET = Price(prompt=0.2, completion=0.6)


def test_cost_per_endpoint_total_and_per_kept_row() -> None:
    m = _metrics()
    r = build_report(
        m,
        method="m",
        simulated=False,
        stop_reason=None,
        prices={"strong": STRONG, "target": TARGET},
    )
    strong = (100 * 500 * 2.5 + 100 * 100 * 10.0) / 1e6  # paid tokens only
    target = (1000 * 0.2 + 800 * 0.6) / 1e6  # the cache hit's 10 + 10 tokens are free
    assert r.endpoints["strong"].cost_usd == pytest.approx(strong)
    assert r.endpoints["target"].cost_usd == pytest.approx(target)
    assert r.cost_usd == pytest.approx(strong + target)
    assert r.cost_per_kept_row_usd == pytest.approx((strong + target) / 120)
    assert r.unpriced == []
    t = r.endpoints["target"]
    assert (t.cached_prompt_tokens, t.cached_completion_tokens) == (10, 10)
    assert (t.prompt_tokens, t.completion_tokens) == (1000, 800)
    assert r.tokens_per_kept_row == pytest.approx((100 * 600 + 1800) / 120)


def test_an_unpriced_endpoint_in_use_makes_the_total_unknown() -> None:
    r = build_report(
        _metrics(), method="m", simulated=False, stop_reason=None, prices={"strong": STRONG}
    )
    assert r.endpoints["strong"].cost_usd == pytest.approx(STRONG.cost(50_000, 10_000))
    assert r.endpoints["target"].cost_usd is None
    assert r.cost_usd is None
    assert r.cost_per_kept_row_usd is None
    assert r.unpriced == ["target"]


def test_an_unpriced_endpoint_that_sent_nothing_does_not_hide_the_cost() -> None:
    m = _metrics()
    m.endpoint("replayed").on_cache_hit(50, 50)  # answered from the cache only: free
    r = build_report(
        m,
        method="m",
        simulated=False,
        stop_reason=None,
        prices={"strong": STRONG, "target": TARGET},
    )
    assert r.endpoints["replayed"].cost_usd is None
    assert r.cost_usd == pytest.approx(STRONG.cost(50_000, 10_000) + TARGET.cost(1000, 800))


def test_without_prices_nothing_is_priced() -> None:
    r = build_report(_metrics(), method="m", simulated=False, stop_reason=None)
    assert all(e.cost_usd is None for e in r.endpoints.values())
    assert r.cost_usd is None
    assert r.unpriced == ["strong", "target"]
    text = render_summary(r)
    assert "cost" not in text  # no cost line and no cost column
    assert "+20 tokens replayed from the cache, free" in text


def test_no_kept_rows_means_no_cost_per_row() -> None:
    m = _metrics()
    m.rows["kept"] = 0
    r = build_report(
        m,
        method="m",
        simulated=False,
        stop_reason=None,
        prices={"strong": STRONG, "target": TARGET},
    )
    assert r.cost_usd is not None and r.cost_usd > 0
    assert r.cost_per_kept_row_usd is None
    assert r.tokens_per_kept_row is None


def test_cost_in_summary_and_json(tmp_path: Path) -> None:
    prices = {"strong": STRONG, "target": TARGET}
    r = build_report(_metrics(), method="m", simulated=False, stop_reason=None, prices=prices)
    assert r.cost_usd is not None and r.cost_per_kept_row_usd is not None
    text = render_summary(r)
    lines = text.splitlines()
    cost = next(line for line in lines if line.startswith("cost"))
    assert f"${r.cost_usd:.4f}" in cost
    assert f"${r.cost_per_kept_row_usd:.4f} per kept row" in cost
    header = next(line for line in lines if line.strip().startswith("endpoint"))
    assert header.split()[-1] == "cost"
    strong = next(line for line in lines if line.strip().startswith("strong"))
    assert strong.split()[-1] == f"${r.endpoints['strong'].cost_usd:.4f}"
    assert len(header) == len(strong)
    assert len(lines) <= 40
    path = tmp_path / "report.json"
    write_report(path, r)
    raw = json.loads(path.read_text())
    assert raw["cost_usd"] == pytest.approx(r.cost_usd)
    assert raw["cost_per_kept_row_usd"] == pytest.approx(r.cost_per_kept_row_usd)
    assert raw["unpriced"] == []
    assert raw["endpoints"]["target"]["cached_prompt_tokens"] == 10
    assert msgspec.json.decode(path.read_bytes(), type=Report).cost_usd == pytest.approx(r.cost_usd)


def test_partly_priced_summary_gives_a_lower_bound() -> None:
    r = build_report(
        _metrics(), method="m", simulated=False, stop_reason=None, prices={"strong": STRONG}
    )
    text = render_summary(r)
    cost = next(line for line in text.splitlines() if line.startswith("cost"))
    low = r.endpoints["strong"].cost_usd
    assert low is not None
    assert cost == f"cost        at least ${low:.4f} (no price for target)"
    target = next(line for line in text.splitlines() if line.strip().startswith("target"))
    assert target.split()[-1] == "-"


def test_large_costs_are_readable() -> None:
    m = _metrics()
    r = build_report(
        m,
        method="m",
        simulated=False,
        stop_reason=None,
        prices={"strong": Price(prompt=50_000.0, completion=0.0), "target": TARGET},
    )
    assert r.cost_usd is not None and r.cost_usd > 1000
    cost = next(line for line in render_summary(r).splitlines() if line.startswith("cost"))
    assert f"${r.cost_usd:,.0f}" in cost
