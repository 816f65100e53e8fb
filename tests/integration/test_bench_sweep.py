"""Sweeps and the SLO search against a simulated endpoint of known capacity, and the files.

The sim serves at most 4 requests at once, 50 ms each, and queues the rest: its capacity
is 4 / 0.05 = 80 requests/s. Past it the queue grows for as long as the run lasts.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.bench import BenchSettings, run_bench
from engine.sim import SimServer, SimSettings

CAPACITY = 80.0
SIM = SimSettings(latency_ms=50.0, max_concurrency=4)
ROOT = Path(__file__).resolve().parents[2]


def _settings(url: str, **kw: Any) -> BenchSettings:
    return BenchSettings(base_url=url, model="sim-model", max_tokens=8, **kw)


async def test_sweep_shows_the_saturation() -> None:
    async with SimServer(SIM) as server:
        report = await run_bench(
            _settings(server.url, load="constant", rates=[40.0, 120.0], duration_s=1.5)
        )
    low, high = report["points"]
    assert "ok" not in report or len(report["points"]) == 2  # no top-level point in a sweep
    assert low["completed_per_s"] == pytest.approx(40.0, rel=0.03)
    # offered 120/s, served at the capacity
    assert high["completed_per_s"] == pytest.approx(CAPACITY, rel=0.05)
    assert low["latency_from_intended_ms"]["p99"] < 70.0
    assert high["latency_from_intended_ms"]["p99"] > 300.0
    # the server's own latency stays 50 ms; the client's wait is at the server's queue here
    assert high["schedule_lag_ms"]["p99"] < 10.0


async def test_slo_search_finds_the_capacity_within_one_step(tmp_path: Path) -> None:
    async with SimServer(SIM) as server:
        report = await run_bench(
            _settings(
                server.url, load="constant", duration_s=1.5, slos={"latency_ms": 200.0},
                search=(20.0, 160.0, 20.0), out=str(tmp_path),
            )
        )  # fmt: skip
    search = report["search"]
    assert search["best_rate"] is not None
    assert abs(search["best_rate"] - CAPACITY) <= 20.0, search
    tried = {t["rate"]: t["met"] for t in search["tried"]}
    assert all(met == (rate <= search["best_rate"]) for rate, met in tried.items())
    assert len(search["tried"]) <= 5
    # every probe is a point of the report, with goodput
    assert [p["rate"] for p in report["points"]] == [t["rate"] for t in search["tried"]]
    for p in report["points"]:
        assert p["goodput_per_s"] is not None
        if p["slo"]["met"]:
            assert p["goodput_per_s"] == pytest.approx(p["completed_per_s"], rel=0.02)
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["search"]["best_rate"] == search["best_rate"]


async def test_warmup_and_cooldown_are_left_out() -> None:
    async with SimServer(SimSettings(latency_ms=5.0)) as server:
        report = await run_bench(
            _settings(
                server.url, load="constant", rate=50.0, requests=100, warmup_s=0.5,
                cooldown_s=0.5,
            )
        )  # fmt: skip
    w = report["window"]
    # 100 requests at 50/s: intended 0 .. 1.98 s; the window keeps 0.5 .. 1.48 s
    assert w["requests"] == 50 and w["excluded"] == 50
    assert report["latency_ms"]["count"] == 50
    assert report["requests"] == 100


async def test_cli_writes_every_report_file(tmp_path: Path) -> None:
    """``synth-engine bench --out``: JSONL per request, summary JSON/CSV with metadata, HTML."""
    out = tmp_path / "out"
    async with SimServer(SimSettings(latency_ms=10.0, tokens_per_s=400.0)) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "bench", "--base-url", server.url,
            "--model", "sim-model", "--load", "poisson", "--rate", "50,100",
            "--requests", "60", "--stream", "--max-tokens", "8", "--slo", "ttft=200",
            "--out", str(out), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert "None" not in text
    assert "SIMULATED ENDPOINT" in text and "rate 50/s (poisson)" in text
    rows = [orjson.loads(x) for x in (out / "requests.jsonl").read_bytes().splitlines()]
    assert len(rows) == 120 and {r["point"] for r in rows} == {0, 1}
    first = rows[0]
    for key in (
        "intended_ms",
        "sent_ms",
        "first_token_ms",
        "end_ms",
        "schedule_lag_ms",
        "ttft_ms",
        "tpot_ms",
        "output_tokens",
        "chunks_ms",
        "meets_slos",
        "in_window",
    ):
        assert key in first, key  # fmt: skip
    assert all(r["ok"] for r in rows)
    summary = orjson.loads((out / "summary.json").read_bytes())
    meta = summary["meta"]
    assert meta["simulated"] is True and meta["version"]
    assert meta["settings"]["rates"] == [50.0, 100.0] and meta["settings"]["api_key_env"] is None
    assert meta["machine"]["cpus"] and meta["client_cpu_s"] > 0
    assert meta["server"]["models"] == ["sim-model"]
    with (out / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [float(r["rate"]) for r in table] == [50.0, 100.0]
    assert table[0]["simulated"] == "True" and "ttft_ms_p99" in table[0]
    page = (out / "report.html").read_text()
    assert page.count('class="plot"') == 4  # rate-latency, rate-throughput, 2 timelines
    assert "SIMULATED ENDPOINT" in page
    # readable offline: nothing loaded from anywhere
    assert "<script" not in page and "src=" not in page and "<link" not in page


async def test_cli_reports_bad_options_with_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", "bench", "--base-url", "http://127.0.0.1:9/v1",
        "--model", "m", "--load", "poisson", "--requests", "5", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "--rate" in stderr.decode() and "needs --rate" in stderr.decode()
