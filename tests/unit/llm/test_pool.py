"""The pool's choice: the member with the most headroom, round robin among equals."""

from __future__ import annotations

from typing import Any

import pytest

from engine.clock import FakeClock
from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.llm.pool import Pool


def _caller(name: str, clock: FakeClock, model: str = "m", **gate: Any) -> Caller:
    return Caller(
        name,
        model,
        Client(name, "http://127.0.0.1:9/v1"),
        Gate(name, adaptive=False, clock=clock, **gate),
    )


async def test_equal_members_take_turns() -> None:
    clock = FakeClock()
    pool = Pool("a+b+c", [_caller(n, clock, max_concurrency=4) for n in "abc"])
    assert [pool.pick().name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


async def test_the_member_with_more_quota_left_is_chosen() -> None:
    clock = FakeClock()
    small = _caller("small", clock, max_concurrency=100, rpm=600)
    large = _caller("large", clock, max_concurrency=100, rpm=1200)
    pool = Pool("p", [small, large])
    picks = {"small": 0, "large": 0}
    for _ in range(30):  # exactly both bursts (10 and 20 requests), no time passes
        member = pool.pick()
        picks[member.name] += 1
        permit = await member.gate.acquire()
        member.gate.release(permit, outcome="ok")
    # The larger quota is drawn first, down to the smaller one's level, then both
    # alternate: each burst is spent exactly, twice as much from the larger.
    assert picks == {"small": 10, "large": 20}
    assert small.gate.free_now() < 1 and large.gate.free_now() < 1
    # Now both are empty: the next call goes where it would start soonest, the faster refill.
    assert pool.pick().name == "large"


async def test_a_paused_member_gets_nothing_until_it_recovers() -> None:
    clock = FakeClock()
    a, b = _caller("a", clock, max_concurrency=4), _caller("b", clock, max_concurrency=4)
    pool = Pool("a+b", [a, b])
    permit = await a.gate.acquire()
    a.gate.release(permit, outcome="rate_limited", retry_after=5.0)
    assert a.gate.expected_wait() > 4.0
    assert {pool.pick().name for _ in range(4)} == {"b"}
    clock.advance(6.0)
    assert {pool.pick().name for _ in range(4)} == {"a", "b"}


def test_members_must_serve_one_model() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="different models"):
        Pool("p", [_caller("a", clock, "m1"), _caller("b", clock, "m2")])
    with pytest.raises(ValueError, match="at least one"):
        Pool("p", [])
