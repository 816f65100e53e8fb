"""Gate on a FakeClock: concurrency, priorities, cancellation, rpm/tpm pacing, 429s, headers, AIMD.

The gate takes the fake clock both as its clock and as its timer scheduler; tests step
the clock timer by timer and yield to the event loop so that woken waiters run.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import pytest

from engine.clock import FakeClock
from engine.errors import Draining, EndpointUnusable
from engine.llm.gate import Gate, Permit
from engine.llm.wire import RateInfo

# ----------------------------------------------------------------- helpers


async def settle(rounds: int = 6) -> None:
    """Let every task that can run, run (a few loop iterations)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def step_to(fake: FakeClock, t: float) -> None:
    """Advance the fake clock to ``t`` (running due timers), never stopping a hair short."""
    fake.advance(max(0.0, t - fake.now))
    while fake.now < t:  # now + (t - now) rounded below t
        fake.advance(math.ulp(t))


async def run_clock(fake: FakeClock, until: float) -> None:
    """Step timer by timer up to ``until``, letting woken tasks run after each one."""
    await settle()
    while True:
        due = fake.next_deadline()
        if due is None or due > until:
            break
        step_to(fake, due)
        await settle()
    step_to(fake, until)
    await settle()


async def fake_sleep(fake: FakeClock, seconds: float) -> None:
    """Sleep ``seconds`` of fake time."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    fake.call_later(seconds, wake)
    await fut


def make_gate(fake: FakeClock, **kw: object) -> Gate:
    return Gate("ep", clock=fake, call_later=fake.call_later, **kw)  # type: ignore[arg-type]


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def max_in_window(times: list[float], window: float = 60.0) -> int:
    """Largest number of grants in any closed window [t, t + window]."""
    times = sorted(times)
    return max((bisect.bisect_right(times, t + window) - i for i, t in enumerate(times)), default=0)


T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    return asyncio.create_task(coro)


def limit_of(gate: Gate) -> float:
    return gate.state().concurrency_limit


# ------------------------------------------------------------- concurrency


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
async def test_concurrency_limit_respected(seed: int) -> None:
    rng = random.Random(seed)
    fake = FakeClock(100.0)
    gate = make_gate(fake, max_concurrency=4, adaptive=False)
    active = peak = done = 0

    async def worker(hold: float, priority: int) -> None:
        nonlocal active, peak, done
        await fake_sleep(fake, rng.uniform(0.0, 3.0))
        p = await gate.acquire(priority=priority)
        active += 1
        peak = max(peak, active)
        assert gate.state().in_flight == active <= 4
        await fake_sleep(fake, hold)
        active -= 1
        gate.release(p)
        done += 1

    tasks = [
        asyncio.create_task(worker(rng.uniform(0.05, 2.0), rng.randint(0, 2))) for _ in range(40)
    ]
    await run_clock(fake, fake.now + 1000.0)
    assert done == 40 and peak == 4
    st = gate.state()
    assert st.in_flight == 0 and st.waiting == 0
    await asyncio.gather(*tasks)


async def test_release_twice_is_a_noop() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=2)
    p = await gate.acquire()
    gate.release(p)
    gate.release(p)
    assert gate.state().in_flight == 0


# ---------------------------------------------------------------- priority


async def test_priority_then_fifo() -> None:
    fake = FakeClock(5.0)
    gate = make_gate(fake, max_concurrency=1, adaptive=False)
    holder = await gate.acquire()
    order: list[str] = []
    permits: list[Permit] = []

    async def waiter(label: str, priority: int) -> None:
        permits.append(await gate.acquire(priority=priority))
        order.append(label)

    tasks = []
    for label, prio in [("a0", 0), ("b1", 1), ("c0", 0), ("d2", 2), ("e1", 1), ("f0", 0)]:
        tasks.append(asyncio.create_task(waiter(label, prio)))
        await settle()
    assert gate.state().waiting == 6
    gate.release(holder)
    for _ in range(6):
        await settle()
        assert gate.state().in_flight == 1
        gate.release(permits[-1])
    await settle()
    assert order == ["d2", "b1", "e1", "a0", "c0", "f0"]
    await asyncio.gather(*tasks)


async def test_large_head_is_not_overtaken() -> None:
    """Strict order: a small request behind a big one waits even if it would fit now."""
    fake = FakeClock(7.0)
    gate = make_gate(fake, tpm=6000)  # 100-token burst, 5900/60 per second
    rate = 5900 / 60
    big = spawn(gate.acquire(tokens=100))
    await settle()
    assert big.done()  # a full bucket
    assert big.result().tokens == 100
    t_big2 = spawn(gate.acquire(tokens=90))
    t_small = spawn(gate.acquire(tokens=5))
    await run_clock(fake, fake.now + 5 / rate + 0.01)
    assert not t_big2.done() and not t_small.done()
    await run_clock(fake, 7.0 + 95 / rate + 1e-6)
    assert t_big2.done() and t_small.done()
    p2, p3 = t_big2.result(), t_small.result()
    assert p2.started_at == pytest.approx(7.0 + 90 / rate)
    assert p3.started_at == pytest.approx(7.0 + 95 / rate)


# ------------------------------------------------------------ cancellation


async def test_cancelled_waiter_is_skipped_and_not_counted() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=1, adaptive=False)
    holder = await gate.acquire()
    order: list[str] = []
    permits: list[Permit] = []

    async def waiter(label: str) -> None:
        permits.append(await gate.acquire())
        order.append(label)

    tasks = {label: asyncio.create_task(waiter(label)) for label in "ABC"}
    await settle()
    tasks["B"].cancel()
    await settle()
    assert tasks["B"].cancelled()
    assert gate.state().waiting == 2  # B no longer counts
    gate.release(holder)
    await settle()
    assert order == ["A"]
    gate.release(permits[-1])
    await settle()
    assert order == ["A", "C"]
    gate.release(permits[-1])
    st = gate.state()
    assert st.in_flight == 0 and st.waiting == 0


async def test_cancelled_head_frees_its_place_on_the_timer() -> None:
    fake = FakeClock(30.0)
    gate = make_gate(fake, rpm=60, max_concurrency=100)  # 1-request burst, 59/min
    first = await gate.acquire()
    assert first.started_at == 30.0
    a = spawn(gate.acquire())
    b = spawn(gate.acquire())
    await settle()
    a.cancel()
    await run_clock(fake, 40.0)
    assert a.cancelled()
    assert b.done()
    pb = b.result()
    assert pb.started_at == pytest.approx(30.0 + 60 / 59)


async def test_granted_and_cancelled_in_the_same_tick_returns_the_permit() -> None:
    fake = FakeClock(1.0)
    gate = make_gate(fake, max_concurrency=1, rpm=600, tpm=60_000, adaptive=False)
    holder = await gate.acquire(tokens=10)
    a = spawn(gate.acquire(tokens=500))
    b = spawn(gate.acquire(tokens=500))
    await settle()
    gate.release(holder, used_tokens=10)  # grants A: its future is resolved ...
    a.cancel()  # ... and its task cancelled before it could run
    await settle()
    assert a.cancelled()
    # A's place went to B; with B released too the gate is empty again.
    assert b.done()
    pb = b.result()
    assert gate.state().in_flight == 1
    gate.release(pb, used_tokens=500)
    assert gate.state().in_flight == 0
    # A's request was refunded: of the rpm bucket's burst of 10, holder and B took one
    # each, so 8 more go at once and the 9th waits.
    for _ in range(8):
        p = await gate.acquire()
        assert p.started_at == 1.0
        gate.release(p)
    late = spawn(gate.acquire())
    await settle()
    assert not late.done()
    await cancel_all([late])


# ----------------------------------------------------------------- rpm pacing


async def test_rpm_pacing_window_safe_and_efficient() -> None:
    start = 1000.0
    fake = FakeClock(start)
    gate = make_gate(fake, rpm=600, max_concurrency=10_000)
    grants: list[float] = []

    async def worker() -> None:
        while True:
            p = await gate.acquire()
            grants.append(p.started_at)
            gate.release(p)  # instant

    tasks = [asyncio.create_task(worker()) for _ in range(1000)]
    await run_clock(fake, start + 180.0)
    await cancel_all(tasks)
    in_run = [t for t in grants if t <= start + 180.0]
    assert max_in_window(grants) <= 600
    assert len(in_run) >= 0.97 * 600 * 3, len(in_run)
    assert gate.state().in_flight == 0


async def test_rpm_below_two_per_minute_still_grants() -> None:
    """rpm=1 gives a half-request burst; one request must still go, then the next 2 min later."""
    fake = FakeClock(3.0)
    gate = make_gate(fake, rpm=1)
    times: list[float] = []

    async def worker() -> None:
        for _ in range(3):
            p = await gate.acquire()
            times.append(p.started_at)
            gate.release(p)

    task = asyncio.create_task(worker())
    await run_clock(fake, 1000.0)
    assert task.done()
    assert times[0] == 3.0
    assert max_in_window(times) == 1


# ------------------------------------------------------------------- tpm


async def test_tpm_reservation_refund_and_debt() -> None:
    fake = FakeClock(50.0)
    gate = make_gate(fake, tpm=6000)  # burst 100 tokens, refill 5900/60 per second
    rate = 5900 / 60
    p1 = await gate.acquire(tokens=80)  # 20 left
    t2 = spawn(gate.acquire(tokens=80))
    await settle()
    assert not t2.done()
    gate.release(p1, used_tokens=30)  # 50 back: 70 now, 10 short
    await run_clock(fake, 60.0)
    p2 = t2.result()
    assert p2.started_at == pytest.approx(50.0 + 10 / rate)
    # Used more than reserved: the excess is charged as a debt the next request waits out.
    fake2 = FakeClock(0.0)
    gate2 = make_gate(fake2, tpm=6000)
    p = await gate2.acquire(tokens=100)  # empties the bucket
    gate2.release(p, used_tokens=250)  # 150 of debt
    t = spawn(gate2.acquire(tokens=40))
    await run_clock(fake2, 10.0)
    pt = t.result()
    assert pt.started_at == pytest.approx(190 / rate)
    # A cancelled request refunds its whole reservation.
    fake3 = FakeClock(0.0)
    gate3 = make_gate(fake3, tpm=6000)
    p = await gate3.acquire(tokens=100)
    gate3.release(p, outcome="cancelled")
    assert (await gate3.acquire(tokens=100)).started_at == 0.0


async def test_acquire_more_than_tpm_raises_immediately() -> None:
    fake = FakeClock()
    gate = make_gate(fake, tpm=1000)
    with pytest.raises(EndpointUnusable, match="can never be sent"):
        await gate.acquire(tokens=1001)
    st = gate.state()
    assert st.in_flight == 0 and st.waiting == 0
    # Exactly the quota is allowed: it waits for a full bucket and goes.
    p = await gate.acquire(tokens=1000)
    assert p.started_at == 0.0


async def test_request_larger_than_burst_grows_the_burst() -> None:
    fake = FakeClock()
    gate = make_gate(fake, tpm=6000)  # burst 100
    p = await gate.acquire(tokens=50)
    t = spawn(gate.acquire(tokens=2000))  # > burst, <= tpm/2: burst grows to 2000
    await run_clock(fake, 100.0)
    assert t.done()
    pt = t.result()
    gate.release(p, used_tokens=50)
    gate.release(pt, used_tokens=2000)
    assert gate.state().tpm == 6000


# ------------------------------------------------------------------- 429


async def test_rate_limited_pauses_then_paces_without_burst() -> None:
    start = 1000.0
    fake = FakeClock(start)
    gate = make_gate(fake, rpm=600, max_concurrency=1000)
    rate = 590 / 60
    first = await gate.acquire()
    grants: list[float] = []

    async def worker() -> None:
        p = await gate.acquire()
        grants.append(p.started_at)
        gate.release(p)

    tasks = [asyncio.create_task(worker()) for _ in range(60)]
    await settle()
    assert len(grants) == 9 and set(grants) == {start}  # the rest of the burst
    gate.release(first, outcome="rate_limited", retry_after=2.0)
    assert gate.state().paused_for == pytest.approx(2.0)
    await run_clock(fake, start + 30.0)
    assert len(grants) == 60
    after = sorted(g for g in grants if g > start)
    assert after[0] >= start + 2.0, "granted during the pause"
    # No burst at resume: from the end of the pause on, grants follow the refill rate.
    for i, t in enumerate(after):
        assert i + 1 <= (t - (start + 2.0)) * rate + 1 + 1e-6, (i, t)
    gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
    assert min(gaps) == pytest.approx(1 / rate)
    await asyncio.gather(*tasks)


async def test_rate_limited_without_retry_after_backs_off_exponentially() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=8)
    for expected in (1.0, 2.0, 4.0):
        p = await gate.acquire()
        gate.release(p, outcome="rate_limited")
        assert gate.state().paused_for == pytest.approx(expected)
        await run_clock(fake, fake.now + expected)
    p = await gate.acquire()
    gate.release(p)  # a success resets the backoff
    p = await gate.acquire()
    gate.release(p, outcome="rate_limited")
    assert gate.state().paused_for == pytest.approx(1.0)


# --------------------------------------------------------------- headers


async def test_learns_rpm_from_headers_and_clamps_to_remaining() -> None:
    fake = FakeClock(20.0)
    gate = make_gate(fake)
    assert gate.state().rpm is None and gate.adapting
    p = await gate.acquire()
    q = await gate.acquire()  # still in flight when p's headers arrive
    gate.release(p, rate=RateInfo(limit_requests=600, remaining_requests=3))
    assert gate.state().rpm == 600
    assert not gate.adapting
    # 3 left at the server, one of them ours (q) in flight: 2 can go now, then paced.
    times: list[float] = []

    async def worker() -> None:
        r = await gate.acquire()
        times.append(r.started_at)
        gate.release(r)

    tasks = [asyncio.create_task(worker()) for _ in range(4)]
    await run_clock(fake, 25.0)
    assert times[:2] == [20.0, 20.0]
    assert times[2] == pytest.approx(20.0 + 60 / 590)
    gate.release(q)
    await asyncio.gather(*tasks)


async def test_learns_tpm_and_respects_lower_configured_limits() -> None:
    fake = FakeClock()
    gate = make_gate(fake, rpm=300)
    p = await gate.acquire()
    gate.release(
        p,
        rate=RateInfo(
            limit_requests=600, remaining_requests=500, limit_tokens=90_000, remaining_tokens=50
        ),
    )
    st = gate.state()
    assert st.rpm == 300  # configured lower than the header: keep it
    assert st.tpm == 90_000
    # remaining_tokens=50 clamps the fresh 1500-token bucket.
    t = spawn(gate.acquire(tokens=100))
    await run_clock(fake, 5.0)
    pt = t.result()
    assert pt.started_at == pytest.approx(50 / ((90_000 - 1500) / 60))


# ------------------------------------------------------------------ AIMD


async def test_overloaded_decreases_once_per_epoch() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=64)
    assert gate.adapting and limit_of(gate) == 64
    permits = [await gate.acquire() for _ in range(10)]  # all in epoch 0
    for p in permits[:5]:
        gate.release(p, outcome="overloaded")
    assert limit_of(gate) == 48  # once, not 5 times
    late = await gate.acquire()  # started after the decrease
    gate.release(late, outcome="overloaded")
    assert limit_of(gate) == 36
    gate.release(permits[5], outcome="overloaded")  # old epoch: same congestion event
    assert limit_of(gate) == 36
    for p in permits[6:]:
        gate.release(p, outcome="error")  # no signal either way
    assert limit_of(gate) == 36


async def test_successes_increase_additively_up_to_max() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=40)
    p = await gate.acquire()
    gate.release(p, outcome="overloaded")
    assert limit_of(gate) == 30
    seen = [limit_of(gate)]
    for _ in range(2000):
        p = await gate.acquire()
        gate.release(p)
        seen.append(limit_of(gate))
    assert seen[30] == 31 and seen[29] == 30  # +1 after `limit` successes
    assert all(b - a in (0, 1) for a, b in zip(seen, seen[1:], strict=False))
    assert max(seen) == 40 and seen[-1] == 40


async def test_decrease_respects_min_concurrency() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=8, min_concurrency=3)
    for _ in range(10):
        p = await gate.acquire()
        gate.release(p, outcome="overloaded")
    assert limit_of(gate) == 3


async def _feed(gate: Gate, n: int, latency: float, tokens: int = 100) -> None:
    for _ in range(n):
        p = await gate.acquire()
        gate.release(p, latency=latency, completion_tokens=tokens)


async def test_growing_latency_decreases_the_limit() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=32)
    await _feed(gate, 100, latency=1.0)  # baseline: 10 ms/token
    assert limit_of(gate) == 32
    await _feed(gate, 200, latency=4.0)  # 4x: the server queues
    assert limit_of(gate) < 32
    low = limit_of(gate)
    await _feed(gate, 600, latency=1.0)  # back to normal: grows again
    assert limit_of(gate) > low


async def test_latency_normalised_by_completion_length() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=16)
    await _feed(gate, 100, latency=1.0, tokens=100)
    await _feed(gate, 300, latency=4.0, tokens=400)  # same per-token latency
    assert limit_of(gate) == 16


async def test_not_adaptive_never_changes_the_limit() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=16, adaptive=False)
    assert not gate.adapting
    for outcome in ("overloaded", "rate_limited", "overloaded"):
        p = await gate.acquire()
        gate.release(p, outcome=outcome)
        await run_clock(fake, fake.now + 10.0)
    await _feed(gate, 50, latency=1.0)
    await _feed(gate, 200, latency=10.0)
    assert limit_of(gate) == 16


async def test_auto_stops_adapting_once_limits_are_known_but_true_keeps_on() -> None:
    fake = FakeClock()
    auto = make_gate(fake, max_concurrency=16, rpm=10_000)
    forced = make_gate(fake, max_concurrency=16, rpm=10_000, adaptive=True)
    assert not auto.adapting and forced.adapting
    for gate in (auto, forced):
        p = await gate.acquire()
        gate.release(p, outcome="overloaded")
    assert limit_of(auto) == 16
    assert limit_of(forced) == 12


# ------------------------------------------------------------ default time


async def test_defaults_to_the_running_loop_clock() -> None:
    gate = Gate("ep", rpm=6000)
    p = await gate.acquire(priority=3)
    loop_now = asyncio.get_running_loop().time()
    assert abs(p.started_at - loop_now) < 1.0
    gate.release(p)
    assert gate.state().in_flight == 0


@pytest.mark.parametrize("seed", range(10))
async def test_waiters_resume_exactly_at_the_end_of_a_pause(seed: int) -> None:
    """The pause timer fires at a float-rounded time; the gate must not spin on the remainder."""
    rng = random.Random(seed)
    start = rng.uniform(0.0, 1e5)
    retry_after = rng.uniform(0.001, 30.0)
    fake = FakeClock(start)
    gate = make_gate(fake, max_concurrency=4)
    p = await gate.acquire()
    gate.release(p, outcome="rate_limited", retry_after=retry_after)
    waiters = [spawn(gate.acquire()) for _ in range(3)]
    await run_clock(fake, start + retry_after + 1.0)
    assert all(w.done() for w in waiters)
    for w in waiters:
        assert w.result().started_at == pytest.approx(start + retry_after, abs=1e-6)
        assert w.result().started_at >= start + retry_after - 1e-6


# ------------------------------------------------- waits the server can cause are capped


async def test_retry_after_over_max_wait_fails_the_endpoint_not_the_run_for_days() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=1, max_wait_s=300.0)
    first = await gate.acquire()
    waiter = asyncio.ensure_future(gate.acquire())
    await settle()
    gate.release(first, outcome="rate_limited", retry_after=999_999.0)
    await settle()
    with pytest.raises(EndpointUnusable, match=r"999,999 s \(Retry-After\).*max_wait_s = 300"):
        await waiter
    # Every later call fails the same way at once: the run stops instead of sleeping.
    with pytest.raises(EndpointUnusable):
        await gate.acquire()
    assert gate.failure is not None and fake.pending_timers() == 0


async def test_retry_after_within_max_wait_pauses_as_before() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=1, max_wait_s=300.0)
    first = await gate.acquire()
    waiter = asyncio.ensure_future(gate.acquire())
    await settle()
    gate.release(first, outcome="rate_limited", retry_after=299.0)
    await run_clock(fake, 298.0)
    assert not waiter.done()
    await run_clock(fake, 300.0)
    assert waiter.result().started_at == pytest.approx(299.0)


async def test_a_debt_that_would_hold_the_queue_past_max_wait_fails_the_endpoint() -> None:
    fake = FakeClock()
    gate = make_gate(fake, tpm=6000.0, max_wait_s=60.0)
    p = await gate.acquire(tokens=100)
    # The server reports usage far above the reservation (a hostile or broken count):
    # the debt would take days to refill.
    gate.release(p, used_tokens=10_000_000)
    with pytest.raises(EndpointUnusable, match="max_wait_s = 60"):
        await gate.acquire(tokens=100)


async def test_negative_remaining_is_no_debt_of_days() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_wait_s=600.0)
    p = await gate.acquire(tokens=10)
    rate = RateInfo(limit_tokens=60_000.0, remaining_tokens=-5_000_000.0, reset_tokens=1.0)
    gate.release(p, rate=rate, used_tokens=10)
    waiter = asyncio.ensure_future(gate.acquire(tokens=10))
    await run_clock(fake, 5.0)
    assert waiter.done() and waiter.result().started_at < 5.0


# ------------------------------------------------------------------------ draining


async def test_drain_fails_calls_held_by_a_pause_at_once() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=4)
    first = await gate.acquire()
    gate.release(first, outcome="rate_limited", retry_after=120.0)
    waiters = [asyncio.ensure_future(gate.acquire()) for _ in range(3)]
    await settle()
    gate.drain(grace_s=5.0)
    await settle()
    for w in waiters:
        with pytest.raises(Draining):
            await w
    with pytest.raises(Draining):
        await gate.acquire()  # a call that cannot start at once gives up


async def test_drain_lets_calls_that_start_within_the_grace_go() -> None:
    fake = FakeClock()
    gate = make_gate(fake, max_concurrency=1)
    first = await gate.acquire()
    queued = asyncio.ensure_future(gate.acquire())
    late = asyncio.ensure_future(gate.acquire())
    await settle()
    gate.drain(grace_s=5.0)
    await fake_sleep_and_settle(fake, 1.0)
    gate.release(first)  # a place frees within the grace: the head goes
    await settle()
    assert queued.done() and not queued.exception()
    await run_clock(fake, 6.0)  # the grace ends with one call still queued
    with pytest.raises(Draining):
        await late
    gate.release(queued.result())
    # A call that can start at once still goes after the grace (its item finishes).
    assert (await gate.acquire()).started_at == pytest.approx(6.0)


async def fake_sleep_and_settle(fake: FakeClock, seconds: float) -> None:
    await run_clock(fake, fake.now + seconds)
