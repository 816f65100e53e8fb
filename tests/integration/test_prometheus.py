"""The Prometheus endpoint on a real run: the CodecLM demo on the in-process simulated
endpoints, scraped over 127.0.0.1 during the run and after it, checked against the report."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import Engine, load_config
from engine.errors import ConfigError
from engine.metrics import Report
from tests.conftest import CONFIGS, run_cli

CONFIG = CONFIGS / "demo.toml"
SMALL = [
    "method.codeclm.metadata_count=8",
    "method.codeclm.instructions_per_metadata=3",
    "run.shard_records=5",
    "run.progress=off",
]
# Slower replies so the run lasts long enough to be scraped while it works.
SLOW = ["endpoints.strong.sim={latency_ms = 40, jitter_ms = 10, seed = 1}"]
PRICED = ["endpoints.strong.price={prompt = 2.5, completion = 10.0}"]
P = "synth_engine_"


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def _scrape(session: aiohttp.ClientSession, url: str) -> dict[Any, float]:
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return _parse(await resp.text())


def _ep(name: str, endpoint: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (P + name, (("endpoint", endpoint),))


def _check_against_report(final: dict[Any, float], report: Report) -> None:
    for name, ep in report.endpoints.items():
        assert final[_ep("requests_total", name)] == ep.requests
        assert final[_ep("requests_ok_total", name)] == ep.ok
        assert final[_ep("http_429_total", name)] == ep.http_429
        assert final[_ep("retries_total", name)] == ep.retries
        assert final[_ep("cache_hits_total", name)] == ep.cache_hits
        assert final[_ep("prompt_tokens_total", name)] == ep.prompt_tokens
        assert final[_ep("completion_tokens_total", name)] == ep.completion_tokens
        assert final[_ep("in_flight", name)] == 0
        assert final[_ep("request_latency_seconds_count", name)] == ep.latency_ms.count
        inf = (P + "request_latency_seconds_bucket", (("endpoint", name), ("le", "+Inf")))
        assert final[inf] == ep.latency_ms.count
        for kind, n in ep.errors.items():
            err = (P + "request_errors_total", (("endpoint", name), ("kind", kind)))
            assert final[err] == n
        if ep.cost_usd is None:
            assert _ep("cost_usd_total", name) not in final
        else:
            assert final[_ep("cost_usd_total", name)] == pytest.approx(ep.cost_usd)
    for name, st in report.stages.items():
        stage = (("stage", name),)
        assert final[(P + "stage_calls_total", stage)] == st.calls
        assert final[(P + "stage_ok_total", stage)] == st.ok
        assert final[(P + "stage_failed_total", stage)] == st.failed
        assert final[(P + "stage_parse_errors_total", stage)] == st.parse_errors
    for kind in ("kept", "rejected", "failed"):
        assert final[(P + "rows_total", (("kind", kind),))] == getattr(report.rows, kind)
    assert final[(P + "items_done_total", ())] == report.items.done
    assert final[(P + "items_planned", ())] == report.items.total


async def test_scraped_during_and_after_a_run(tmp_path: Path) -> None:
    config = load_config(CONFIG, [f"run.output={tmp_path / 'out'}", *SMALL, *SLOW, *PRICED])
    during: list[dict[Any, float]] = []
    async with Engine(config, metrics_port=0) as engine:
        url = engine.metrics_url
        assert url is not None
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        async with aiohttp.ClientSession() as session:
            run = asyncio.create_task(engine.run())
            for _ in range(600):  # bounded: at most 600 scrapes, 30 s
                if run.done():
                    break
                during.append(await _scrape(session, url))
                await asyncio.sleep(0.05)
            result = await asyncio.wait_for(run, 60)
            final = await _scrape(session, url)  # the engine is still open: last figures
    assert result.complete and result.report is not None
    report = result.report

    # Counters never went down, and the run was seen working, not only before and after.
    strong = _ep("requests_total", "strong")
    seen = [s.get(strong, 0.0) for s in [*during, final]]
    assert seen == sorted(seen)
    assert len(during) >= 3, "the run was too short to be scraped while working"
    mid = [v for v in seen[:-1] if 0 < v < seen[-1]]
    assert mid, f"no scrape caught the run in progress: {seen}"
    kept = [s.get((P + "rows_total", (("kind", "kept"),)), 0.0) for s in [*during, final]]
    assert kept == sorted(kept) and kept[-1] > 0
    assert any(s.get(_ep("in_flight", "strong"), 0) > 0 for s in during)

    _check_against_report(final, report)
    assert report.cost_usd is None  # target has no price ...
    assert report.unpriced == ["target"]
    strong_cost = report.endpoints["strong"].cost_usd
    assert strong_cost is not None and strong_cost > 0  # ... strong has one
    assert _ep("cost_usd_total", "target") not in final

    # Closed with the engine.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url)


async def test_two_engines_serve_their_own_figures(tmp_path: Path) -> None:
    def cfg(name: str, seed: int) -> Any:
        return load_config(CONFIG, [f"run.output={tmp_path / name}", *SMALL, f"run.seed={seed}"])

    async with (
        Engine(cfg("a", 0), metrics_port=0) as a,
        Engine(cfg("b", 1), metrics_port=0) as b,
    ):
        assert a.metrics_url and b.metrics_url and a.metrics_url != b.metrics_url
        result_a = await a.run()
        async with aiohttp.ClientSession() as session:
            scraped_a = await _scrape(session, a.metrics_url)
            scraped_b = await _scrape(session, b.metrics_url)
        assert result_a.report is not None
        _check_against_report(scraped_a, result_a.report)
        # b has not run: its registry holds none of a's figures.
        assert _ep("requests_total", "strong") not in scraped_b
        assert scraped_b[(P + "rows_total", (("kind", "kept"),))] == 0


async def test_no_port_no_endpoint(tmp_path: Path) -> None:
    config = load_config(CONFIG, [f"run.output={tmp_path / 'out'}", *SMALL])
    async with Engine(config) as engine:
        assert engine.metrics_url is None


async def test_missing_prometheus_client_fails_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    config = load_config(CONFIG, [f"run.output={tmp_path / 'out'}", *SMALL])
    engine = Engine(config, metrics_port=0)
    with pytest.raises(ConfigError) as info:
        await engine.__aenter__()
    assert "synth-engine[metrics]" in (info.value.hint or "")
    assert engine.metrics_url is None


def test_cli_prints_the_metrics_url(tmp_path: Path) -> None:
    sets: list[str] = []
    for item in [f"run.output={tmp_path / 'out'}", *SMALL]:
        sets += ["--set", item]
    proc = run_cli("run", str(CONFIG), *sets, "--metrics-port", "0", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"^metrics\s+http://127\.0\.0\.1:(\d+)/metrics$", proc.stderr, re.M)
    assert match, proc.stderr
    assert 0 < int(match.group(1)) < 65536
    # A port that is not a port is a config error (exit 2), not a traceback.
    bad = run_cli("run", str(CONFIG), *sets, "--metrics-port", "70000", "--quiet", timeout=60)
    assert bad.returncode == 2
    assert "metrics_port" in bad.stderr and "Traceback" not in bad.stderr
