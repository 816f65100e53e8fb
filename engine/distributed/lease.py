"""Rate leases: how a fleet of workers shares one endpoint's requests/min and tokens/min.

One :class:`ShareLedger` per endpoint (held by a single Ray actor) hands each worker a
*share*: a fraction of the endpoint's rpm and tpm. The worker's gate sizes its
window-safe buckets to that fraction (:meth:`engine.llm.gate.Gate.set_share`), so it
paces itself locally with no call per request, and :class:`LeaseClient` renews the share
in the background.

Why the fleet never exceeds the quota:

1. A gate whose share changes over time never lets through more, in any 60-second
   window, than the largest share it held during that window: what a bucket releases in
   a window is at most its level at the window's start plus what refilled during it, and
   both are bounded by the largest shape (``bucket.py``; resizing keeps the level capped).
2. The ledger keeps the sum of the shares it has handed out, plus every share *cooling*
   after a holder gave it up, at most 1. A share a worker gave up (smaller renewal,
   release, or a lease left to expire) cools for one window after the last moment the
   worker could still have spent at the old size, so in every window the largest shares
   held add up to at most the whole quota.
3. A lease is good for ``term_s``, counted on the worker from the moment it *sent* the
   request (so it ends before the ledger's own clock says it does). A worker that cannot
   renew in time holds its gate: a dead or unreachable worker stops spending by itself.

Fair shares: each worker that has demand (requests in flight or waiting at its gate)
gets ``1 / (busy workers + workers not yet registered)``. A worker with no demand keeps
its share until another worker is below its fair share; then it gives it up at its next
renewal, and after the cooling window the share goes to the worker that needs it.
A finished worker releases its share at once (it still cools one window).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from ..clock import Clock, monotonic
from ..llm.gate import Gate

__all__ = ("Grant", "LeaseClient", "LeaseServer", "LedgerState", "ShareLedger")

log = logging.getLogger("engine")

_EPS = 1e-9


class Grant(msgspec.Struct, frozen=True):
    """One lease: a share of the endpoint's limits, good for ``term_s`` seconds.

    Attributes:
        share: fraction of the endpoint's rpm and tpm (0 holds the worker's gate).
        term_s: seconds the lease is good for, from when the worker asked for it.
    """

    share: float
    term_s: float


class LedgerState(msgspec.Struct, frozen=True):
    """A snapshot of a ledger, for tests, reports and the benchmark.

    Attributes:
        shares: worker -> its current share.
        cooling: total of the shares cooling before they can be handed out again.
        allocated: shares + cooling (never above 1).
        max_allocated: the largest ``allocated`` ever seen.
        grants: leases handed out so far.
        expired: leases that ran out without a renewal (lost workers).
    """

    shares: dict[str, float]
    cooling: float
    allocated: float
    max_allocated: float
    grants: int
    expired: int


class _Holder:
    __slots__ = ("busy", "expires_at", "share")

    def __init__(self, now: float) -> None:
        self.share = 0.0
        self.expires_at = now
        self.busy = True


class ShareLedger:
    """The fleet's shares of one endpoint's quota (pure bookkeeping; see the module doc).

    Args:
        workers: workers expected in the fleet (a worker not yet registered is counted
            in the fair share, so the first to come does not take everything).
        term_s: how long a lease is good for.
        window_s: the quota's window; a share given up cools this long.
        grace_s: added to every cooling period (clock skew between processes, delays).
        clock: monotonic time.
    """

    def __init__(
        self,
        workers: int,
        *,
        term_s: float = 6.0,
        window_s: float = 60.0,
        grace_s: float = 1.0,
        clock: Clock = monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1 (got {workers})")
        if not term_s > 0:
            raise ValueError(f"term_s must be > 0 (got {term_s})")
        self._expected = workers
        self._term = float(term_s)
        self._window = float(window_s)
        self._grace = float(grace_s)
        self._clock = clock
        self._holders: dict[str, _Holder] = {}
        self._seen: set[str] = set()
        self._cooling: list[tuple[float, float]] = []  # (free at, amount)
        self._max_allocated = 0.0
        self._grants = 0
        self._expired = 0

    # ------------------------------------------------------------ internals
    def _cool(self, amount: float, spent_until: float) -> None:
        if amount > _EPS:
            self._cooling.append((spent_until + self._window + self._grace, amount))

    def _tidy(self, now: float) -> None:
        """Expire leases that ran out; free shares that have cooled."""
        for worker, h in list(self._holders.items()):
            if h.expires_at < now:
                # Not renewed in time: the worker has held its gate since expires_at.
                self._cool(h.share, h.expires_at)
                del self._holders[worker]
                self._expired += 1
        if self._cooling:
            self._cooling = [(at, amount) for at, amount in self._cooling if at > now]

    def _allocated(self) -> float:
        return sum(h.share for h in self._holders.values()) + sum(a for _, a in self._cooling)

    def _fair(self) -> float:
        busy = sum(1 for h in self._holders.values() if h.busy)
        pending = max(0, self._expected - len(self._seen))
        return 1.0 / max(1, busy + pending)

    # --------------------------------------------------------------- public
    def acquire(self, worker: str, *, busy: bool = True) -> Grant:
        """Grant or renew ``worker``'s lease.

        Args:
            worker: the worker's stable id (a restarted worker keeps its id).
            busy: whether the worker has demand at this endpoint.

        Returns:
            The worker's share from now on, good for ``term_s``.
        """
        now = self._clock()
        self._tidy(now)
        h = self._holders.get(worker)
        if h is None:
            h = self._holders[worker] = _Holder(now)
            self._seen.add(worker)
        h.busy = True
        fair = self._fair()  # as if this worker were busy
        h.busy = busy
        starving = sum(
            max(0.0, self._fair() - o.share)
            for w, o in self._holders.items()
            if w != worker and o.busy
        )
        free = max(0.0, 1.0 - self._allocated())
        if busy or starving <= free + _EPS:
            target = max(fair, h.share) if not busy else fair
        else:
            target = 0.0  # idle while a busy worker needs more than is free: give it up
        if h.share > target + _EPS and (not busy or starving > free + _EPS):
            # Give up the excess; it was spendable until the current lease's end.
            self._cool(h.share - target, max(h.expires_at, now))
            h.share = target
        elif h.share < target - _EPS:
            # An idle worker takes only what no busy worker is short of.
            h.share += min(target - h.share, free if busy else free - starving)
        h.expires_at = now + self._term
        self._grants += 1
        self._max_allocated = max(self._max_allocated, self._allocated())
        return Grant(share=h.share, term_s=self._term)

    def release(self, worker: str) -> None:
        """``worker`` has finished: its share cools for one window, then is free.

        The worker holds its gate before it calls this, so it spends nothing after now.
        """
        now = self._clock()
        self._tidy(now)
        h = self._holders.pop(worker, None)
        if h is not None:
            self._cool(h.share, now)
            self._expected = max(1, self._expected - 1)
            self._seen.discard(worker)

    def state(self) -> LedgerState:
        """A snapshot."""
        self._tidy(self._clock())
        cooling = sum(a for _, a in self._cooling)
        return LedgerState(
            shares={w: h.share for w, h in sorted(self._holders.items())},
            cooling=cooling,
            allocated=self._allocated(),
            max_allocated=self._max_allocated,
            grants=self._grants,
            expired=self._expired,
        )


class LeaseServer(Protocol):
    """Where a worker gets its leases (a Ray actor's methods, or a ledger in-process)."""

    def acquire(self, worker: str, busy: bool) -> Awaitable[Grant]:
        """Grant or renew ``worker``'s lease."""
        ...

    def release(self, worker: str) -> Awaitable[None]:
        """``worker`` has finished with this endpoint."""
        ...


class LeaseClient:
    """Keeps one gate on a lease: acquires it, renews it, holds the gate when it runs out.

    Use as an async context manager around the engine's run: entering waits for the
    first lease (the gate holds every request until then), leaving holds the gate and
    releases the share.

    Args:
        gate: the endpoint's gate in this worker.
        server: the endpoint's lease server.
        worker: this worker's stable id.
        poll_s: how often demand is sampled (``gate.state()``; no cost per request).
        renew_every: renew after this fraction of the term has passed.
        on_lost: called once when no lease could be renewed for ``lost_after_s`` (the
            gate is then held; the caller should stop the run).
        lost_after_s: see ``on_lost``.
        call_timeout_s: most seconds one call to the server may take.
    """

    def __init__(
        self,
        gate: Gate,
        server: LeaseServer,
        worker: str,
        *,
        poll_s: float = 0.25,
        renew_every: float = 1 / 3,
        on_lost: Callable[[], None] | None = None,
        lost_after_s: float = 30.0,
        call_timeout_s: float = 10.0,
    ) -> None:
        self.gate = gate
        self.server = server
        self.worker = worker
        self._poll = poll_s
        self._renew_every = renew_every
        self._on_lost = on_lost
        self._lost_after = lost_after_s
        self._call_timeout = call_timeout_s
        self._share = 0.0
        self._expires_at = -math.inf
        self._renew_at = -math.inf
        self._last_ok = 0.0
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.renewals = 0

    @property
    def share(self) -> float:
        """The share in force now (0 while held)."""
        return self._share

    async def __aenter__(self) -> LeaseClient:
        loop = asyncio.get_running_loop()
        self.gate.set_share(0.0)
        self._last_ok = loop.time()
        while not await self._renew(busy=True):
            await asyncio.sleep(self._poll)
            if loop.time() - self._last_ok > self._lost_after:
                raise TimeoutError(f"no lease for endpoint {self.gate.name} from the fleet")
        self._task = asyncio.create_task(self._loop(), name=f"lease-{self.gate.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Hold the gate, stop renewing and release the share."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._apply_share(0.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.release(self.worker), self._call_timeout)

    def _apply_share(self, share: float) -> None:
        if share != self._share:
            self._share = share
            self.gate.set_share(share)

    def _expire(self) -> None:
        self._expiry = None
        log.warning("lease of endpoint %s ran out before renewal: holding", self.gate.name)
        self._apply_share(0.0)

    async def _renew(self, busy: bool) -> bool:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            grant = await asyncio.wait_for(
                self.server.acquire(self.worker, busy), self._call_timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server is unreachable or died: hold at expiry
            log.warning("lease renewal for endpoint %s failed: %s", self.gate.name, exc)
            return False
        now = loop.time()
        self._expires_at = sent + grant.term_s
        if self._expires_at <= now:
            return False  # the answer came too late to use
        self._renew_at = sent + grant.term_s * self._renew_every
        self._last_ok = now
        self.renewals += 1
        self._apply_share(grant.share)
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.call_at(self._expires_at, self._expire)
        return True

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        busy = False
        lost = False
        while True:
            await asyncio.sleep(self._poll)
            st = self.gate.state()
            now_busy = st.in_flight > 0 or st.waiting > 0
            busy = busy or now_busy
            now = loop.time()
            # Renew on schedule, or at once when demand appears while holding nothing.
            if now >= self._renew_at or (now_busy and self._share == 0.0):
                if await self._renew(busy):
                    busy = False
                    lost = False
                elif not lost and loop.time() - self._last_ok > self._lost_after:
                    lost = True
                    if self._on_lost is not None:
                        self._on_lost()
