"""``synth-engine bench`` on the simulated endpoint: load models, schedule lag, streaming metrics.

Every run is bounded: a fixed number of requests at a fixed rate, a few seconds each.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from engine.bench import BenchSettings, run_bench
from engine.sim import FaultWindow, SimServer, SimSettings


def _settings(url: str, **kw: Any) -> BenchSettings:
    return BenchSettings(base_url=url, model="sim-model", **kw)


@pytest.mark.parametrize("load", ["constant", "poisson"])
async def test_achieved_rate_within_one_percent(load: str) -> None:
    async with SimServer(SimSettings(latency_ms=10.0)) as server:
        report = await run_bench(
            _settings(server.url, load=load, rate=200.0, requests=600, max_tokens=8, out=None)
        )
        served = server.stats()
    assert report["ok"] == 600 and served["completed"] == 600
    assert abs(report["send_rate_per_s"] / 200.0 - 1.0) < 0.01, report["send_rate_per_s"]
    assert abs(report["rate_error_pct"]) < 1.0
    # the server saw the same rate: its completions span the same time
    assert abs(report["completed_per_s"] / 200.0 - 1.0) < 0.01, report["completed_per_s"]
    # sent on schedule (a busy shared machine can stall the loop now and then)
    assert report["schedule_lag_ms"]["p50"] < 2.0
    assert report["schedule_lag_ms"]["p99"] < 100.0


async def test_poisson_gaps_are_exponential() -> None:
    """The schedule sent is the process asked for: gaps with a coefficient of variation ~1."""
    async with SimServer(SimSettings(latency_ms=5.0)) as server:
        settings = _settings(server.url, load="poisson", rate=300.0, requests=900, max_tokens=4)
        from engine.bench.lengths import parse_length
        from engine.bench.runner import run_point
        from engine.bench.tokens import WordTokens
        from engine.bench.workload import Workload

        tokens = WordTokens()
        workload = Workload(tokens, prompt_tokens=parse_length(8), output_tokens=parse_length(4))
        res = await run_point(settings, workload, tokens, rate=300.0)
    sent = sorted(r.sent for r in res.records if r.sent is not None)
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    # Exponential gaps have a CV of 1; a constant rate would give about 0. The band allows
    # for loop jitter on a loaded machine.
    assert 0.75 < cv < 1.25, cv


async def test_schedule_lag_against_a_server_that_stalls() -> None:
    """One request stalls 0.5 s; with one request allowed in flight, the next ones queue.

    The schedule lag of each request must be exactly the wait for the slot: it is sent
    when its predecessor's reply is in, or on time if that came first. Latency from the
    intended time then includes the stall for every request queued behind it, while
    latency from the send shows it only for the one that stalled.
    """
    sim = SimSettings(
        latency_ms=10.0,
        hang_s=0.5,
        schedule=[FaultWindow(start_s=1.0, end_s=1.06, kind="timeout")],
    )
    async with SimServer(sim) as server:
        report = await run_bench(
            _settings(
                server.url, load="constant", rate=20.0, requests=60, concurrency=1,
                max_tokens=4, out=None,
            )
        )  # fmt: skip
        stalled = server.stats()["faults"].get("timeout", 0)
    assert stalled == 1 and report["ok"] == 60
    lag = report["schedule_lag_ms"]
    lat = report["latency_ms"]
    intended = report["latency_from_intended_ms"]
    # the stall holds the slot ~500 ms; the next request was due 50 ms after the stalled one
    assert 420.0 < lag["max"] < 500.0, lag
    assert lat["max"] >= 490.0 and lat["p50"] < 30.0  # only one slow request from its send
    assert intended["max"] >= 490.0 and intended["p90"] > 100.0  # queued ones, from schedule
    assert lag["p50"] < 5.0  # requests before the stall and after the catch-up went on time


async def test_schedule_lag_recurrence(tmp_path: Any) -> None:
    """Per request: sent = max(intended, previous end) with one slot (the queue's law)."""
    import orjson

    sim = SimSettings(
        latency_ms=10.0, hang_s=0.4, schedule=[FaultWindow(start_s=0.5, end_s=0.56, kind="timeout")]
    )
    async with SimServer(sim) as server:
        await run_bench(
            _settings(
                server.url, load="constant", rate=20.0, requests=40, concurrency=1,
                max_tokens=4, out=str(tmp_path),
            )
        )  # fmt: skip
    rows = [orjson.loads(x) for x in (tmp_path / "requests.jsonl").read_bytes().splitlines()]
    rows.sort(key=lambda r: r["intended_ms"])
    queued = 0
    for prev, row in zip(rows, rows[1:], strict=False):
        expect = max(row["intended_ms"], prev["end_ms"])
        # Within the event loop's jitter (milliseconds; tens on a loaded machine), where a
        # wrong law would be off by the 400 ms stall.
        assert row["sent_ms"] == pytest.approx(expect, abs=25.0), (prev, row)
        assert row["schedule_lag_ms"] == pytest.approx(
            row["sent_ms"] - row["intended_ms"], abs=0.01
        )
        queued += row["schedule_lag_ms"] > 20.0
    assert queued >= 5


async def test_open_loop_without_a_cap_sends_on_time_through_a_stall() -> None:
    sim = SimSettings(
        latency_ms=10.0, hang_s=0.5, schedule=[FaultWindow(start_s=0.5, end_s=0.56, kind="timeout")]
    )
    async with SimServer(sim) as server:
        report = await run_bench(
            _settings(server.url, load="constant", rate=20.0, requests=30, max_tokens=4)
        )
    # On time: a few ms of event-loop jitter at most (under a loaded machine, tens), where
    # waiting for the stalled request would lag by about 500 ms.
    assert report["schedule_lag_ms"]["max"] < 50.0
    assert report["latency_ms"]["max"] >= 490.0


async def test_itl_tpot_at_a_fixed_token_cadence() -> None:
    """The sim streams one token per event every 1/50 s after 30 ms: TPOT = ITL = 20 ms."""
    async with SimServer(SimSettings(latency_ms=30.0, tokens_per_s=50.0)) as server:
        report = await run_bench(
            _settings(
                server.url, concurrency=4, requests=32, max_tokens=16, ignore_eos=True,
                stream=True,
            )
        )  # fmt: skip
    assert report["ok"] == 32
    assert report["output_tokens"]["min"] == report["output_tokens"]["max"] == 16
    assert report["output_tokens_from"] == ["usage"]
    assert report["tpot_ms"]["mean"] == pytest.approx(20.0, rel=0.06)
    assert report["tpot_ms"]["p50"] == pytest.approx(20.0, rel=0.06)
    assert report["itl_ms"]["p50"] == pytest.approx(20.0, rel=0.06)
    assert report["itl_ms"]["mean"] == pytest.approx(20.0, rel=0.06)
    assert report["itl_ms"]["count"] == 32 * 15
    assert report["inter_chunk_ms"]["p50"] == pytest.approx(20.0, rel=0.06)
    assert report["inter_chunk_ms"]["count"] == 32 * 15
    assert report["ttft_ms"]["p50"] == pytest.approx(30.0, abs=5.0)
    # latency = TTFT + 15 gaps + the final event one interval later
    assert report["latency_ms"]["p50"] == pytest.approx(30.0 + 16 * 20.0, abs=10.0)


async def test_itl_with_a_tokenizer_counts_each_read(tmp_path: Any) -> None:
    """A whitespace word-level tokenizer counts the sim's tokens exactly per read."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from engine.sim.model import _VOCAB

    vocab = {w: i for i, w in enumerate(["[UNK]", "[simulated]", *_VOCAB])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    async with SimServer(SimSettings(latency_ms=20.0, tokens_per_s=100.0, usage=False)) as server:
        report = await run_bench(
            _settings(
                server.url, concurrency=2, requests=10, max_tokens=12, ignore_eos=True,
                stream=True, tokenizer=str(path),
            )
        )  # fmt: skip
    # no usage from the server: output tokens are the tokenizer's (label included)
    assert report["output_tokens_from"] == ["tokenizer"]
    assert report["output_tokens"]["p50"] == 13
    # 10 ms a token: each read is noted when the loop gets to it, which on a busy
    # machine adds a few hundred microseconds to a fraction of the gaps.
    assert report["itl_ms"]["p50"] == pytest.approx(10.0, rel=0.1)
