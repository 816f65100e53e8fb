"""The progress display: plain lines with a FakeClock, and rich mode into a StringIO."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from engine.clock import FakeClock
from engine.config import Price
from engine.metrics import Metrics, Progress


def _metrics(clock: FakeClock, *, total: int | None = 200) -> Metrics:
    m = Metrics(clock=clock)
    m.items_total = total
    strong = m.endpoint("strong")
    # 12 requests finish over 10 s with 900 tokens each; 31 stay in flight.
    for _ in range(12):
        strong.on_start()
        clock.advance(10.0 / 12)
        strong.on_finish(0.5, True, None, 600, 300, None)
    for _ in range(31):
        strong.on_start()
    strong.on_start()
    strong.on_finish(0.0, False, "rate_limited", 0, 0, None)
    m.items_started = 60
    m.items_done = 40
    m.rows.update(kept=120, rejected=30, failed=0)
    return m


def test_render_line() -> None:
    clock = FakeClock()
    m = _metrics(clock)
    line = Progress(m, stream=io.StringIO(), use_rich=False).render_line()
    assert line.startswith("[   10.0s] items 40/200 (20%)")
    assert "kept 120 rejected 30 failed 0" in line
    rpm, _ = m.endpoint("strong").rates()
    assert rpm == pytest.approx(78.0)  # 13 finished (the 429 too) in 10 s
    assert "strong 78.0 rpm 64.8k tpm in-flight 31" in line
    assert "429s 1" in line
    # 40 items in 10 s, 160 to go.
    assert line.endswith("eta 40s")
    assert "\n" not in line


def test_render_line_unknown_total_and_resume() -> None:
    clock = FakeClock()
    m = _metrics(clock, total=None)
    m.items_skipped = 5
    line = Progress(m, stream=io.StringIO(), use_rich=False).render_line()
    assert "items 45 (5 resumed) |" in line
    assert "eta ?" in line


def test_render_line_several_endpoints_and_long_eta() -> None:
    clock = FakeClock()
    m = _metrics(clock, total=100_000)
    m.endpoint("judge").on_start()
    line = Progress(m, stream=io.StringIO(), use_rich=False).render_line()
    assert "strong 78.0 rpm" in line
    assert "judge 0.0 rpm 0.0 tpm in-flight 1" in line
    assert "(0%)" in line
    assert "eta 6h56m" in line  # 99_960 items at 4 items/s


def test_render_line_shows_cost_when_priced() -> None:
    clock = FakeClock()
    m = _metrics(clock)
    price = Price(prompt=3.0, completion=15.0)
    line = Progress(m, stream=io.StringIO(), use_rich=False, prices={"strong": price}).render_line()
    # 13 attempts paid for 12 x (600 + 300) tokens; the cost comes before the eta.
    want = price.cost(12 * 600, 12 * 300)
    # 40 of 200 items done: projected at the same cost per item, 5x.
    assert f"| 429s 1 | cost ${want:.4f} (~${5 * want:.4f} at end) | eta 40s" in line
    m.items_skipped = 100  # resumed: only 60 to go, at this invocation's cost per item
    line = Progress(m, stream=io.StringIO(), use_rich=False, prices={"strong": price}).render_line()
    assert f"cost ${want:.4f} (~${want * 2.5:.4f} at end)" in line
    m.items_skipped = 0
    # An endpoint in use without a price makes the figure a lower bound, not projected.
    m.endpoint("judge").on_start()
    line = Progress(m, stream=io.StringIO(), use_rich=False, prices={"strong": price}).render_line()
    assert f"cost ${want:.4f}+? |" in line
    # Without prices, no cost at all.
    assert "cost" not in Progress(m, stream=io.StringIO(), use_rich=False).render_line()


def test_rich_mode_shows_cost() -> None:
    clock = FakeClock()
    m = _metrics(clock)
    out = io.StringIO()
    p = Progress(m, stream=out, use_rich=True, prices={"strong": Price(prompt=1000.0)})
    p.tick()
    p.close()
    assert f"cost ${12 * 600 * 1000.0 / 1e6:.2f}" in out.getvalue()


def test_plain_lines_are_throttled() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    out = io.StringIO()
    p = Progress(m, stream=out, use_rich=False, plain_interval_s=10.0)
    p.tick()
    assert out.getvalue() == ""
    clock.advance(5.0)
    p.tick()
    assert out.getvalue() == ""
    clock.advance(5.0)
    p.tick()
    p.tick()
    assert len(out.getvalue().splitlines()) == 1
    clock.advance(10.0)
    m.items_done = 7
    p.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("[   20.0s] items 7 |")
    p.close()
    p.close()  # idempotent
    assert len(out.getvalue().splitlines()) == 3
    p.tick()  # after close: nothing
    assert len(out.getvalue().splitlines()) == 3


def test_auto_mode_follows_isatty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    m = Metrics(clock=FakeClock())
    assert Progress(m, stream=io.StringIO()).use_rich is False
    assert Progress(m, stream=Tty()).use_rich is True


def test_rich_mode_shows_key_numbers() -> None:
    clock = FakeClock()
    m = _metrics(clock)
    out = io.StringIO()
    p = Progress(m, stream=out, use_rich=True)
    p.tick()
    m.items_done = 50
    clock.advance(1.0)
    p.tick()
    p.close()
    text = out.getvalue()
    assert "50/200" in text
    assert "25%" in text
    assert "kept 120" in text
    assert "rejected 30" in text
    assert "strong" in text
    assert "in-flight 31" in text
    assert "429s 1" in text


def test_rich_mode_unknown_total() -> None:
    clock = FakeClock()
    m = _metrics(clock, total=None)
    out = io.StringIO()
    p = Progress(m, stream=out, use_rich=True)
    p.tick()
    p.close()
    assert "kept 120" in out.getvalue()


class _Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("stream gone")


@pytest.mark.parametrize("use_rich", [False, True])
def test_render_errors_are_logged_once_and_swallowed(
    use_rich: bool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    p = Progress(Metrics(clock=clock), stream=_Broken(), use_rich=use_rich, plain_interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger="engine.metrics"):
        for _ in range(3):
            clock.advance(1.0)
            p.tick()
        p.close()
    warnings = [r for r in caplog.records if r.name == "engine.metrics"]
    assert len(warnings) == 1
    assert "progress display failed" in warnings[0].getMessage()


async def test_run_renders_until_cancelled() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    m.items_total = 4
    out = io.StringIO()
    p = Progress(m, stream=out, interval_s=0.005, plain_interval_s=0.0, use_rich=False)
    task = asyncio.create_task(p.run())
    for done in range(1, 5):
        await asyncio.sleep(0.01)
        clock.advance(1.0)
        m.items_done = done
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[-1].startswith("[    4.0s] items 4/4 (100%)")
    assert lines[-1].endswith("eta 0s")
