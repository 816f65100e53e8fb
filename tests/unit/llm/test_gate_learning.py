"""Learning limits from headers keeps the first minute within the quota."""

from __future__ import annotations

import asyncio

from engine.clock import FakeClock
from engine.llm.gate import Gate
from engine.llm.wire import RateInfo


async def test_requests_sent_before_learning_count_against_the_first_minute() -> None:
    clock = FakeClock()
    gate = Gate("e", max_concurrency=64, clock=clock, call_later=clock.call_later, adaptive=False)
    permits = [await gate.acquire(0) for _ in range(64)]  # no limit known yet: all go at once
    granted_at: list[float] = []

    async def one() -> None:
        permit = await gate.acquire(0)
        granted_at.append(clock.now)
        gate.release(permit, outcome="ok")

    gate.release(
        permits.pop(), outcome="ok", rate=RateInfo(limit_requests=600, remaining_requests=536)
    )
    for permit in permits:
        gate.release(permit, outcome="ok")
    tasks = [asyncio.create_task(one()) for _ in range(1300)]
    for _ in range(1200):  # 120 simulated seconds in 0.1 s steps
        clock.advance(0.1)
        for _ in range(3):
            await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Every 60 s window, counting the 64 sent before the limit was known, holds <= 600.
    times = [0.0] * 64 + granted_at
    for start in [0.0, *granted_at]:
        assert sum(1 for t in times if start <= t < start + 60.0) <= 600
    assert len(granted_at) >= 0.97 * 600 * 2 - 64 - 20


async def test_steady_jitter_and_mixed_lengths_do_not_read_as_queueing() -> None:
    import random

    clock = FakeClock()
    gate = Gate("e", max_concurrency=64, clock=clock, call_later=clock.call_later)
    rng = random.Random(5)
    for _ in range(5000):
        permit = await gate.acquire(0)
        tokens = rng.choice([8, 30, 120, 500])
        latency = 0.02 + 0.001 * tokens + rng.uniform(-0.01, 0.01)  # steady server, no queue
        gate.release(permit, outcome="ok", latency=latency, completion_tokens=tokens)
    assert gate.state().concurrency_limit == 64


async def test_latency_growing_with_load_lowers_the_limit() -> None:
    clock = FakeClock()
    gate = Gate("e", max_concurrency=64, clock=clock, call_later=clock.call_later)
    for i in range(3000):
        permit = await gate.acquire(0)
        latency = 0.05 * (1 + i / 300)  # a queue building up: latency keeps rising
        gate.release(permit, outcome="ok", latency=latency, completion_tokens=50)
    assert gate.state().concurrency_limit < 64


async def test_auto_mode_restores_the_ceiling_once_limits_are_learned() -> None:
    """AIMD cuts made while no limit was known stop binding when headers give one."""
    clock = FakeClock()
    gate = Gate("e", max_concurrency=64, clock=clock, call_later=clock.call_later)
    assert gate.adapting
    for _ in range(3):  # three congestion events, each a new epoch, each a cut
        gate.release(await gate.acquire(0), outcome="overloaded")
    assert gate.state().concurrency_limit < 32
    gate.release(await gate.acquire(0), outcome="ok", rate=RateInfo(limit_requests=6000))
    assert not gate.adapting
    assert gate.state().concurrency_limit == 64
    permits = [await gate.acquire(0) for _ in range(64)]  # 64 in flight at once again
    assert gate.state().in_flight == 64
    for permit in permits:
        gate.release(permit, outcome="overloaded")  # no longer cut: limits are known
    assert gate.state().concurrency_limit == 64


async def test_fixed_adaptive_mode_keeps_its_cuts_after_learning() -> None:
    clock = FakeClock()
    gate = Gate("e", max_concurrency=64, clock=clock, call_later=clock.call_later, adaptive=True)
    gate.release(await gate.acquire(0), outcome="overloaded")
    gate.release(await gate.acquire(0), outcome="ok", rate=RateInfo(limit_requests=6000))
    assert gate.adapting and gate.state().concurrency_limit < 64
