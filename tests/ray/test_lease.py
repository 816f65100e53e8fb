"""Rate leases without Ray: the ledger's bookkeeping, Gate.set_share, and the fleet bound.

The fleet test runs real gates and a real ledger on one FakeClock: workers come and go,
turn idle and busy, and some stop renewing (a lost worker); every grant of every gate is
recorded and no 60-second window may hold more than the quota.
"""

from __future__ import annotations

import asyncio
import functools
import random
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.distributed.lease import Grant, LeaseClient, ShareLedger
from engine.llm.gate import Gate
from tests.unit.llm.test_gate import cancel_all, max_in_window, run_clock, settle

# ------------------------------------------------------------------- ledger


def test_first_worker_gets_its_fair_share_not_the_whole_quota() -> None:
    fake = FakeClock()
    ledger = ShareLedger(4, clock=fake)
    assert ledger.acquire("w0").share == pytest.approx(0.25)
    assert ledger.acquire("w1").share == pytest.approx(0.25)
    st = ledger.state()
    assert st.allocated == pytest.approx(0.5)
    assert st.shares == {"w0": pytest.approx(0.25), "w1": pytest.approx(0.25)}


def test_released_share_cools_one_window_then_goes_to_the_busy() -> None:
    fake = FakeClock()
    ledger = ShareLedger(2, term_s=6.0, window_s=60.0, grace_s=1.0, clock=fake)
    assert ledger.acquire("a").share == pytest.approx(0.5)
    assert ledger.acquire("b").share == pytest.approx(0.5)
    fake.advance(1.0)
    ledger.release("a")
    fake.advance(2.0)
    # b is now the only worker, but a's half cools until release + window + grace.
    assert ledger.acquire("b").share == pytest.approx(0.5)
    assert ledger.state().cooling == pytest.approx(0.5)
    for _ in range(29):
        fake.advance(2.0)
        assert ledger.acquire("b").share == pytest.approx(0.5)
    fake.advance(2.0)  # t = 63 > 1 + 61
    assert ledger.acquire("b").share == pytest.approx(1.0)
    assert ledger.state().max_allocated <= 1.0 + 1e-9


def test_idle_worker_keeps_its_share_until_a_busy_one_starves() -> None:
    fake = FakeClock()
    ledger = ShareLedger(2, clock=fake)
    ledger.acquire("a", busy=False)
    ledger.acquire("b", busy=False)
    fake.advance(2.0)
    # Both idle (e.g. both in a phase that does not use this endpoint): nobody starves.
    assert ledger.acquire("a", busy=False).share == pytest.approx(0.5)
    assert ledger.acquire("b", busy=False).share == pytest.approx(0.5)
    fake.advance(2.0)
    assert ledger.acquire("b", busy=True).share == pytest.approx(0.5)  # fair is 1, none free
    assert ledger.acquire("a", busy=False).share == 0.0  # b starves: a gives its half up
    # It cools from the end of a's previous lease (t=2 + 6) for a window (+1 s grace).
    while fake.now < 80.0:
        fake.advance(2.0)
        assert ledger.acquire("a", busy=False).share == 0.0
        expected = 1.0 if fake.now > 8.0 + 60.0 + 1.0 else 0.5
        assert ledger.acquire("b").share == pytest.approx(expected), fake.now


def test_lease_not_renewed_expires_and_cools_from_its_end() -> None:
    fake = FakeClock()
    ledger = ShareLedger(2, term_s=6.0, clock=fake)
    ledger.acquire("lost")
    ledger.acquire("b")
    fake.advance(5.0)
    ledger.acquire("b")  # b renews in time, "lost" does not
    fake.advance(1.5)
    assert ledger.acquire("b").share == pytest.approx(0.5)
    st = ledger.state()
    assert st.expired == 1 and "lost" not in st.shares
    while fake.now < 80.0:  # lost's lease ended at 6: its half is free after 6 + 60 + 1
        fake.advance(2.0)
        expected = 1.0 if fake.now > 67.0 else 0.5
        assert ledger.acquire("b").share == pytest.approx(expected), fake.now


def test_random_schedules_never_allocate_more_than_the_quota() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        fake = FakeClock()
        n = rng.randint(1, 6)
        ledger = ShareLedger(n, term_s=6.0, clock=fake)
        workers = [f"w{i}" for i in range(n)]
        for _ in range(400):
            fake.advance(rng.uniform(0.0, 3.0))
            w = rng.choice(workers)
            if rng.random() < 0.05:
                ledger.release(w)
            else:
                grant = ledger.acquire(w, busy=rng.random() < 0.7)
                assert 0.0 <= grant.share <= 1.0
            assert ledger.state().allocated <= 1.0 + 1e-9
        assert ledger.state().max_allocated <= 1.0 + 1e-9


# --------------------------------------------------------------------- gate


def make_gate(fake: FakeClock, name: str, **kw: Any) -> Gate:
    return Gate(name, clock=fake, call_later=fake.call_later, **kw)


async def consume(gate: Gate, fake: FakeClock, times: list[float]) -> None:
    """Take every grant the gate gives, recording when."""
    while True:
        permit = await gate.acquire(1)
        times.append(fake.now)
        gate.release(permit)


async def test_set_share_scales_the_rate_and_zero_holds() -> None:
    fake = FakeClock()
    gate = make_gate(fake, "ep", rpm=600, max_concurrency=100)
    gate.set_share(0.25)
    times: list[float] = []
    task = asyncio.create_task(consume(gate, fake, times))
    await run_clock(fake, 120.0)
    assert max_in_window(times) <= 150
    assert max_in_window(times) >= 140  # paced close to the share, not far below it
    gate.set_share(0.0)
    held = len(times)
    await run_clock(fake, 180.0)
    assert len(times) == held  # nothing passes a held gate
    gate.set_share(1.0)
    await run_clock(fake, 200.0)
    assert len(times) > held
    await cancel_all([task])
    with pytest.raises(ValueError):
        gate.set_share(1.5)


# -------------------------------------------------------------------- fleet


Shares = dict[int, list[tuple[float, float]]]


def max_shares_in_window(shares: Shares, window: float = 60.0) -> float:
    """Largest sum, over workers, of the biggest share each applied within one window.

    This is what the proof bounds by 1 (module doc of engine.distributed.lease); checked
    on windows starting and ending at every change.
    """
    changes = sorted({t for hist in shares.values() for t, _ in hist})
    worst = 0.0
    for start in [*changes, *(t - window for t in changes)]:
        total = 0.0
        for hist in shares.values():
            held = [f for t, f in hist if start <= t <= start + window]
            before = [f for t, f in hist if t < start]
            if before:
                held.append(before[-1])  # the share in force when the window opened
            total += max(held, default=0.0)
        worst = max(worst, total)
    return worst


async def fleet_run(
    seed: int, *, window_s: float = 60.0
) -> tuple[list[float], Shares, ShareLedger]:
    """Real gates + one ledger + lease renewals on a fake clock, for 600 s with churn.

    Workers turn idle and busy, get lost (they keep spending until their lease ends, and
    come back later under the same id, as a restarted Ray actor does) or finish (hold
    and release). Returns every grant's time, the shares each gate applied, and the ledger.
    """
    rng = random.Random(seed)
    fake = FakeClock()
    rpm, n, term = 240.0, 4, 6.0
    ledger = ShareLedger(n, term_s=term, window_s=window_s, clock=fake)
    gates = [make_gate(fake, f"w{i}", rpm=rpm, max_concurrency=1000) for i in range(n)]
    times: list[float] = []
    tasks: dict[int, asyncio.Task[None]] = {}
    state = dict.fromkeys(range(n), "live")  # live | lost | done
    expiry: dict[int, float] = {}
    shares: Shares = {i: [] for i in range(n)}

    def apply(i: int, share: float) -> None:
        gates[i].set_share(share)
        shares[i].append((fake.now, share))

    def renew(i: int) -> None:
        if state[i] != "live":
            return
        grant = ledger.acquire(f"w{i}", busy=i in tasks)
        expiry[i] = fake.now + grant.term_s
        apply(i, grant.share)
        fake.call_later(grant.term_s, lambda: check_expiry(i))
        fake.call_later(grant.term_s / 3 * rng.uniform(0.8, 1.0), lambda: renew(i))

    def check_expiry(i: int) -> None:
        if fake.now >= expiry[i]:
            apply(i, 0.0)

    def come_back(i: int) -> None:
        if state[i] == "lost":
            state[i] = "live"
            renew(i)

    for i in range(n):
        gates[i].set_share(0.0)
        tasks[i] = asyncio.create_task(consume(gates[i], fake, times))
        fake.call_later(rng.uniform(0.0, 3.0), functools.partial(renew, i))
    t = 0.0
    while t < 600.0:
        t += rng.uniform(5.0, 30.0)
        await run_clock(fake, t)
        i = rng.randrange(n)
        event = rng.random()
        if state[i] != "live":
            continue
        if event < 0.35 and i in tasks:  # goes idle
            await cancel_all([tasks.pop(i)])
        elif event < 0.75 and i not in tasks:  # busy again
            tasks[i] = asyncio.create_task(consume(gates[i], fake, times))
        elif event < 0.95:  # lost: spends until its lease ends, restarts later
            state[i] = "lost"
            fake.call_later(rng.uniform(10.0, 40.0), functools.partial(come_back, i))
        elif sum(s == "live" for s in state.values()) > 1:  # finished: holds, releases
            state[i] = "done"
            apply(i, 0.0)
            ledger.release(f"w{i}")
    await cancel_all(tasks.values())
    await settle()
    return times, shares, ledger


@pytest.mark.parametrize("seed", range(3))
async def test_fleet_of_gates_on_leases_never_exceeds_the_quota_in_any_window(seed: int) -> None:
    times, shares, ledger = await fleet_run(seed)
    assert ledger.state().max_allocated <= 1.0 + 1e-9
    assert max_shares_in_window(shares) <= 1.0 + 1e-9
    assert max_in_window(times) <= 240
    assert len(times) > 4 * 240  # traffic really flowed (600 s at up to 240/min)


async def test_fleet_bound_needs_the_cooling_window() -> None:
    """With a 5 s cooling instead of a window, shares given up are handed out again
    while their old holders' spending is still inside the window: the invariant the
    test above checks breaks, so that test can fail.
    """
    worst = 0.0
    for seed in range(3):
        _, shares, _ = await fleet_run(seed, window_s=5.0)
        worst = max(worst, max_shares_in_window(shares))
    assert worst > 1.0 + 1e-6


async def test_fleet_all_busy_uses_nearly_the_whole_quota() -> None:
    fake = FakeClock()
    rpm, n = 600.0, 4
    ledger = ShareLedger(n, clock=fake)
    gates = [make_gate(fake, f"w{i}", rpm=rpm, max_concurrency=1000) for i in range(n)]
    times: list[float] = []

    def renew(i: int) -> None:
        gates[i].set_share(ledger.acquire(f"w{i}").share)
        fake.call_later(2.0, lambda: renew(i))

    for i in range(n):
        renew(i)
    tasks = [asyncio.create_task(consume(g, fake, times)) for g in gates]
    await run_clock(fake, 180.0)
    await cancel_all(tasks)
    assert max_in_window(times) <= rpm
    assert len(times) >= 0.97 * rpm * 3  # window-safe pacing: 98.3% of the quota


# ------------------------------------------------------------- lease client


class _Server:
    """An in-process lease server over a ledger (what the Ray actor wraps)."""

    def __init__(self, ledger: ShareLedger, *, fail: bool = False) -> None:
        self.ledger = ledger
        self.fail = fail
        self.released: list[str] = []

    async def acquire(self, worker: str, busy: bool) -> Grant:
        if self.fail:
            raise ConnectionError("lease server unreachable")
        return self.ledger.acquire(worker, busy=busy)

    async def release(self, worker: str) -> None:
        self.released.append(worker)
        self.ledger.release(worker)


async def test_lease_client_applies_renews_holds_on_loss_and_releases() -> None:
    ledger = ShareLedger(2, term_s=0.6)
    server = _Server(ledger)
    gate = Gate("ep", rpm=600)
    lost: list[bool] = []
    client = LeaseClient(
        gate, server, "w0", poll_s=0.02, on_lost=lambda: lost.append(True), lost_after_s=0.5
    )
    async with client:
        assert client.share == pytest.approx(0.5)
        await asyncio.sleep(0.5)
        assert client.renewals >= 2  # renewed every third of the term
        server.fail = True
        await asyncio.sleep(1.0)
        assert client.share == 0.0  # ran out: the gate holds
        assert lost == [True]
        server.fail = False
        await asyncio.sleep(0.3)
    assert server.released == ["w0"]
    assert client.share == 0.0
