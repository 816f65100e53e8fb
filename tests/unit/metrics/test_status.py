"""OUT/status.json: the live figures a viewer in another process reads."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.config import Price
from engine.metrics.core import Metrics
from engine.metrics.status import SERIES_COLUMNS, StatusWriter


def _metrics(clock: FakeClock) -> Metrics:
    m = Metrics(clock=clock)
    ep = m.endpoint("strong")
    ep.on_start()
    clock.advance(0.5)
    ep.on_finish(0.5, True, None, 100, 50, None)
    ep.on_start()
    ep.on_finish(0.1, False, "rate_limited", 0, 0, None)
    m.stage("judge").calls = 3
    m.stage("judge").ok = 2
    m.add_row("kept")
    m.add_row("rejected")
    m.items_done = 2
    return m


def test_write_publishes_counts_stages_endpoints_and_cost(tmp_path: Path) -> None:
    clock = FakeClock()
    m = _metrics(clock)
    writer = StatusWriter(
        tmp_path,
        m,
        rows=lambda: {"kept": 11, "rejected": 1, "failed": 0},
        prices={"strong": Price(prompt=1.0, completion=2.0)},
        wall=lambda: 1_700_000_000.0,
    )
    assert writer.write()
    doc = json.loads((tmp_path / "status.json").read_text())
    assert doc["state"] == "running"
    assert doc["updated_at"] == 1_700_000_000.0
    assert doc["rows"] == {"kept": 11, "rejected": 1, "failed": 0}  # earlier runs included
    assert doc["rows_this_run"] == {"kept": 1, "rejected": 1, "failed": 0}
    assert doc["stages"]["judge"] == {"calls": 3, "ok": 2, "failed": 0, "parse_errors": 0}
    strong = doc["endpoints"]["strong"]
    assert (strong["requests"], strong["http_429"], strong["in_flight"]) == (2, 1, 0)
    assert doc["cost_usd"] == (100 * 1.0 + 50 * 2.0) / 1e6
    assert doc["series"]["columns"] == list(SERIES_COLUMNS)
    point = dict(zip(SERIES_COLUMNS, doc["series"]["points"][-1], strict=True))
    assert (point["requests"], point["tokens"], point["http_429"], point["kept"]) == (2, 150, 1, 1)
    assert not (tmp_path / "status.json.tmp").exists()


def test_unpriced_endpoint_makes_cost_unknown(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path, _metrics(FakeClock()), prices={})
    assert writer.status()["cost_usd"] is None


def test_series_stays_bounded_and_keeps_its_start(tmp_path: Path) -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    writer = StatusWriter(tmp_path, m, max_points=16)
    for _ in range(1000):
        clock.advance(1.0)
        writer.status()
    points = writer.status()["series"]["points"]
    assert 8 <= len(points) <= 16
    assert points[0][0] == 1.0  # the first sample survives every halving
    times = [p[0] for p in points]
    assert times == sorted(times)
    assert times[-1] >= 1000 - 2 * 1000 / 16  # recent samples keep arriving


def test_a_failed_write_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = StatusWriter(tmp_path / "missing", Metrics(clock=FakeClock()))
    with caplog.at_level(logging.INFO, logger="engine.metrics"):
        assert writer.write() is False
        assert writer.write() is False
    # Once, and below the CLI's default level: the shard writer reports a full disk.
    assert [r.levelno for r in caplog.records] == [logging.INFO]


async def test_run_writes_until_cancelled_then_says_ended(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path, Metrics(), interval_s=0.01)
    task = asyncio.create_task(writer.run())
    for _ in range(200):  # bounded: at most ~2 s
        await asyncio.sleep(0.01)
        if (tmp_path / "status.json").exists():
            break
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "running"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "ended"
