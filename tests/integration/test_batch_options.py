"""Batch mode's options end to end, on the simulated endpoint (docs/batch.md).

* ``retry_with = "online"``: requests a batch did not run are sent online, and the rows
  are still the online run's;
* ``max_requests``: a stage is split into batches of at most that many requests;
* budgets count batch requests at the batch price: a run whose online cost is over the
  limit completes in batch mode when its batch cost is under it, and one whose batch cost
  is over it stops with the budget reached;
* Anthropic's transport gives the rows of the OpenAI one (the simulated endpoint answers a
  Messages request as the chat request it translates from);
* a stop (what Ctrl+C sets) leaves the batches running, or cancels them with
  ``cancel_on_stop``, and the next run reads them without submitting anything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, load_config
from engine.sim import SimServer
from tests.golden.outputs import CASES, ROOT

from .test_batch_mode import DEMO, SMALL, _rows, _settings
from .test_batch_mode import _sets as _demo_sets

# Batches that take about a tenth of a second from submission to results.
QUICK = {"processing_s": 0.05, "validating_s": 0.02, "finalizing_s": 0.02}
PRICES = [
    "endpoints.strong.price={prompt = 2.0, completion = 8.0}",
    "endpoints.target.price={prompt = 1.0, completion = 2.0}",
]


# Batches sent and polled often: a batch-mode run of the small demo takes a few seconds.
BRISK = "{max_wait_s = 0.05, poll_s = 0.03, poll_max_s = 0.1}"


def _sets(
    out: Path, url: str, mode: str, *, kind: str = "openai", extra: list[str] | None = None
) -> list[str]:
    brisk = [f"endpoints.{e}.batch={BRISK}" for e in ("strong", "target")]
    return _demo_sets(out, url, mode, kind=kind, extra=[*brisk, *(extra or [])])


async def _run(sets: list[str], stop: asyncio.Event | None = None) -> Any:
    async with Engine(load_config(DEMO, sets)) as engine:
        return await engine.run(stop=stop)


def _spent(out: Path) -> float:
    spend = json.loads((out / "manifest.json").read_text())["extra"]["spend"]
    return float(sum(c["cost"] for per in spend.values() for c in per.values()))


def _batch_stats(result: Any, field: str) -> int:
    return sum(int(b[field]) for b in result.report.method_report["batch"].values())


async def test_retry_with_online_sends_what_a_batch_did_not_run_online(tmp_path: Path) -> None:
    # Simulated time runs 100,000 times faster and the window is 20,000 simulated seconds:
    # a batch whose requests were drawn not to run expires 0.2 s after its submission.
    settings = _settings(
        {
            "speed": 100_000,
            "processing_s": 5_000,
            "completion_window_s": 20_000,
            "expire_fraction": 0.3,
        }
    )
    async with SimServer(settings) as sim:
        online = await _run(_sets(tmp_path / "online", sim.url, "online"))
        chat_before = sim.stats()["requests"]
        batched = await _run(
            _sets(
                tmp_path / "batch",
                sim.url,
                "batch",
                extra=[f"endpoints.{e}.batch.retry_with=online" for e in ("strong", "target")],
            )
        )
        stats = sim.stats()
    assert online.complete and batched.complete
    sent_online = _batch_stats(batched, "requests_online")
    assert sent_online > 0
    # Each went online once: the server saw that many more chat requests than before
    # (batch lines are not chat requests), and none of them went into a second batch.
    assert stats["requests"] - chat_before == sent_online
    assert max(stats["batches"]["submissions_by_custom_id"].values()) == 1
    assert _rows(tmp_path / "batch") == _rows(tmp_path / "online")


async def test_a_stage_is_split_at_the_configured_max_requests(tmp_path: Path) -> None:
    async with SimServer(_settings(QUICK)) as sim:
        result = await _run(
            _sets(
                tmp_path / "batch",
                sim.url,
                "batch",
                extra=[
                    f"endpoints.{e}.batch={{max_requests = 3, max_wait_s = 0.5, poll_s = 0.03, poll_max_s = 0.1}}"
                    for e in ("strong", "target")
                ],
            )
        )
        stats = sim.stats()["batches"]
    assert result.complete
    with contextlib.closing(sqlite3.connect(tmp_path / "batch" / "cache.sqlite")) as db:
        sizes = [n for (n,) in db.execute("SELECT requests FROM batch_submissions")]
    assert len(sizes) == stats["batches_submitted"] == _batch_stats(result, "batches_submitted")
    assert sum(sizes) == stats["lines_submitted"] > 3
    # Sent as soon as 3 are in (a stage's calls all arrive well within max_wait_s): 3 at
    # most each, and most of them full.
    assert max(sizes) == 3 and sizes.count(3) > len(sizes) / 2


async def test_budgets_count_batch_requests_at_the_batch_price(tmp_path: Path) -> None:
    async with SimServer(_settings(QUICK)) as sim:
        online = await _run([*_sets(tmp_path / "online", sim.url, "online"), *PRICES])
        full = _spent(tmp_path / "online")
        # Over the online cost, under the batch cost's double: completes in batch mode.
        roomy = await _run(
            [
                *_sets(tmp_path / "roomy", sim.url, "batch"),
                *PRICES,
                f"budget.max_cost={full * 0.75:.6f}",
            ]
        )
        # Under the batch cost: stops with the budget reached.
        tight = await _run(
            [
                *_sets(tmp_path / "tight", sim.url, "batch"),
                *PRICES,
                f"budget.max_cost={full * 0.2:.6f}",
            ]
        )
    assert online.complete and full > 0
    assert roomy.complete, roomy.stop_reason
    assert _spent(tmp_path / "roomy") == pytest.approx(full / 2, rel=1e-6)
    assert not tight.complete and "budget" in str(tight.stop_reason)
    assert _spent(tmp_path / "tight") < full / 2


# The built-in methods' shipped configs, made small (tests/golden/outputs.py's cases).
METHODS = {name: (ROOT / config, sets) for name, (config, sets) in CASES.items()}
METHODS["codeclm"] = (DEMO, SMALL)


def _anthropic_sets(config: Path, out: Path, url: str, kind: str, mode: str) -> list[str]:
    """Every endpoint of ``config`` on the server at ``url``, structured output read from
    text (the Messages API has no JSON mode: the default of ``kind = "anthropic"``)."""
    sets = [f"run.output={out}"]
    for ep in load_config(config).endpoints:
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.kind={kind}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.structured_output=false",
            f"endpoints.{ep}.mode={mode}",
            f"endpoints.{ep}.batch={BRISK}",
        ]
        if kind == "anthropic":
            sets.append(f"endpoints.{ep}.api_key_env=SIM_ANTHROPIC_KEY")
    return sets


# Methods that ask for n > 1 samples in one call (SELF-GUIDE's votes, the LAB's
# num_samples): the Messages API has no ``n``, so the transport sends n requests, and the
# simulated endpoint answers a request by its body: n identical requests get one answer n
# times where the chat API's n choices differ. Their rows cannot equal the OpenAI run's
# (a real model samples each request anew); they are checked to complete with rows.
SAMPLING = {"lab", "selfguide", "selfguide_classification"}


async def _both(tmp: Path, name: str) -> dict[str, Any]:
    config, small = METHODS[name]
    runs = {}
    async with SimServer(_settings(QUICK)) as sim:
        for kind in ("openai", "anthropic"):
            sets = [*_anthropic_sets(config, tmp / kind, sim.url, kind, "online"), *small]
            async with Engine(load_config(config, sets)) as engine:
                runs[kind] = await engine.run()
    return runs


@pytest.mark.parametrize("name", sorted(set(METHODS) - SAMPLING))
async def test_anthropic_gives_the_rows_of_openai(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("SIM_ANTHROPIC_KEY", "sk-ant-sim-0123456789")
    runs = await _both(tmp_path, name)
    assert runs["openai"].complete and runs["anthropic"].complete
    openai, anthropic = _rows(tmp_path / "openai"), _rows(tmp_path / "anthropic")
    assert len(openai) > 0
    assert anthropic == openai


async def test_anthropic_in_batch_mode_gives_the_rows_of_openai(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_ANTHROPIC_KEY", "sk-ant-sim-0123456789")
    async with SimServer(_settings(QUICK)) as sim:
        for kind, mode in (("openai", "online"), ("anthropic", "batch")):
            sets = [*_anthropic_sets(DEMO, tmp_path / kind, sim.url, kind, mode), *SMALL]
            async with Engine(load_config(DEMO, sets)) as engine:
                assert (await engine.run()).complete
        batches = sim.stats()["anthropic"]["message_batches"]
    assert batches["batches_submitted"] > 1
    assert _rows(tmp_path / "anthropic") == _rows(tmp_path / "openai")


@pytest.mark.parametrize("name", sorted(SAMPLING))
async def test_anthropic_runs_the_sampling_methods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("SIM_ANTHROPIC_KEY", "sk-ant-sim-0123456789")
    runs = await _both(tmp_path, name)
    result = runs["anthropic"]
    assert result.complete, result.stop_reason
    assert result.report.rows.kept > 0
    assert all(json.loads(r)["simulated"] is True for r in _rows(tmp_path / "anthropic").values())


@pytest.mark.parametrize("cancel", [False, True])
async def test_a_stop_leaves_batches_running_unless_cancel_on_stop(
    tmp_path: Path, cancel: bool
) -> None:
    """What Ctrl+C does (it sets the run's stop event), with batches running."""
    # Each batch runs 0.25 s: the stop comes within milliseconds, while the first one runs.
    async with SimServer(_settings({**QUICK, "processing_s": 0.2})) as sim:
        await _run(_sets(tmp_path / "online", sim.url, "online"))
        sets = _sets(
            tmp_path / "batch",
            sim.url,
            "batch",
            extra=[
                f"endpoints.{e}.batch.cancel_on_stop={str(cancel).lower()}"
                for e in ("strong", "target")
            ],
        )
        stop = asyncio.Event()
        first = asyncio.create_task(_run(sets, stop))
        for _ in range(500):
            if sim.stats()["batches"]["batches_submitted"] or first.done():
                break
            await asyncio.sleep(0.01)
        stop.set()
        stopped = await asyncio.wait_for(first, 30)
        statuses = sim.stats()["batches"]["batches_by_status"]
        rerun = await _run(sets)
        stats = sim.stats()["batches"]
    assert not stopped.complete
    assert _batch_stats(stopped, "batches_submitted") >= 1
    ended_by_cancel = statuses.get("cancelling", 0) + statuses.get("cancelled", 0)
    if cancel:
        assert ended_by_cancel == sum(statuses.values())
    else:
        assert ended_by_cancel == 0
        assert statuses.get("completed", 0) < sum(statuses.values())  # still running
    assert rerun.complete
    assert _rows(tmp_path / "batch") == _rows(tmp_path / "online")
    if not cancel:  # the rerun read the running batches: nothing was submitted twice
        assert max(stats["submissions_by_custom_id"].values()) == 1
        assert _batch_stats(rerun, "batches_submitted") < stats["batches_submitted"]
