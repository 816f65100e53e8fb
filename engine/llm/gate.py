"""The per-endpoint gate: who calls the endpoint next, and when.

A request passes the gate when all of these hold, checked in one place (``_pump``):

* fewer than ``limit`` requests of this endpoint are in flight (the concurrency
  limit: fixed, or adapted by AIMD when nothing else bounds the endpoint);
* the endpoint is not paused (a 429 pauses the whole endpoint for its Retry-After);
* the requests/min bucket has one request and the tokens/min bucket has the request's
  reservation (prompt estimate + max_tokens), when those limits are known.

Waiters sit in one heap keyed ``(-priority, seq)``: a deeper pipeline stage goes first,
FIFO within a stage, strictly in order (a large request at the head is not overtaken, so
it cannot starve). Waiting is event-driven: a release or a single timer armed for the
head's earliest possible start wakes the pump; nothing polls. Cancelled waiters are
dropped lazily, and a waiter cancelled after it was granted gives its place back.

After each response :meth:`Gate.release` reconciles the token reservation with the
reported usage, tightens the buckets from ``x-ratelimit-*`` headers (learning the limits
when the config gave none), raises them to the burst a server's headers grant where that
is safe (:mod:`engine.llm.burst`), and feeds the AIMD controller.

Every wait a server can cause is bounded by ``max_wait_s``: a Retry-After, a reset or a
debt that would hold the head of the queue longer fails the gate for good with
:class:`~engine.errors.EndpointUnusable` (the run stops resumably instead of sleeping for
days). :meth:`Gate.drain` (a stop was asked) bounds the waiting of the calls still to come
by a short grace, so a paused endpoint cannot hold a drain.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Literal

from ..clock import Cancellable, Clock, Scheduler
from ..errors import Draining, EndpointUnusable, RunHalted
from .aimd import Aimd
from .bucket import TokenBucket
from .burst import SendLedger, credit
from .permit import GateState, Outcome, Permit
from .wire import RateInfo

__all__ = ("Gate", "GateState", "Outcome", "Permit")


_MEAN_ALPHA = 0.05  # smoothing of the running means behind expected_wait()


class Gate:
    """Concurrency + RPM/TPM admission for one endpoint, with priorities.

    Args:
        name: endpoint name (for errors).
        max_concurrency: hard ceiling of requests in flight.
        rpm: requests per minute, or None if unknown (then learned from headers).
        tpm: tokens per minute, or None if unknown (then learned from headers).
        adaptive: "auto" adapts concurrency (AIMD on errors and queueing latency) only
            while no rpm/tpm limit is known; True always; False never.
        min_concurrency: floor for the adaptive limit.
        burst_s: bucket burst, in seconds' worth of the limit (see ``bucket``).
        max_wait_s: the longest the head of the queue may be held by the server's limits
            (a 429's Retry-After, a bucket debt); beyond it the gate fails every call with
            :class:`~engine.errors.EndpointUnusable`.
        clock: monotonic time; default the running loop's.
        call_later: timer scheduler; default the running loop's.
    """

    def __init__(
        self,
        name: str,
        *,
        max_concurrency: int = 64,
        rpm: float | None = None,
        tpm: float | None = None,
        adaptive: bool | Literal["auto"] = "auto",
        min_concurrency: int = 1,
        burst_s: float = 1.0,
        max_wait_s: float = 600.0,
        clock: Clock | None = None,
        call_later: Scheduler | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not 0 < max_wait_s < math.inf:
            raise ValueError(f"max_wait_s must be a positive number (got {max_wait_s})")
        self._max_wait = float(max_wait_s)
        # Set once the endpoint failed as a whole: every waiter and every later call gets it.
        self._failure: RunHalted | None = None
        # While draining, a call still waiting at this time gives up (Draining).
        self._drain_deadline = math.inf
        self.name = name
        self._clock = clock
        self._call_later = call_later
        self._aimd = Aimd(max_concurrency, min_concurrency)
        self._adaptive = adaptive
        self._burst_s = burst_s
        self._configured_rpm = rpm
        self._configured_tpm = tpm
        self._rpm: float | None = None
        self._tpm: float | None = None
        self._req_bucket: TokenBucket | None = None
        self._tok_bucket: TokenBucket | None = None
        self._in_flight = 0
        self._heap: list[tuple[int, int, int, asyncio.Future[Permit]]] = []
        self._seq = itertools.count()
        self._timer: Cancellable | None = None
        self._timer_at = math.inf
        self._paused_until = -math.inf
        self._consecutive_429 = 0
        # Grants made before a limit was known, charged to the bucket once one is learned.
        self._first_grant_at: float | None = None
        self._granted_requests = 0
        self._granted_tokens = 0
        # A lease of a fleet's quota (engine.distributed): the buckets are sized for
        # this fraction of the limits; 0 holds every grant until a lease comes.
        self._share = 1.0
        self._held = False
        # Running means for expected_wait(): reservation size and request latency.
        self._mean_tokens = 0.0
        self._mean_latency = 0.0
        # Sends and answers, to credit the burst a server grants (engine.llm.burst);
        # crediting stops for good after a paced request gets a 429.
        self._ledger = SendLedger()
        self._credit_on = True
        if rpm is not None:
            self._set_rpm(rpm)
        if tpm is not None:
            self._set_tpm(tpm)

    # ------------------------------------------------------------------ time
    def _now(self) -> float:
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        return self._clock()

    def _schedule(self, delay: float, cb: Callable[[], None]) -> Cancellable:
        if self._call_later is None:
            self._call_later = asyncio.get_running_loop().call_later
        return self._call_later(delay, cb)

    # ---------------------------------------------------------------- limits
    def _set_rpm(self, rpm: float) -> None:
        if not rpm > 0:
            raise ValueError(f"rpm must be > 0 (got {rpm})")
        self._rpm = float(rpm)
        rpm = rpm * (self._share or 1.0)
        if self._req_bucket is None:
            self._req_bucket = TokenBucket.for_limit(rpm, burst_s=self._burst_s, clock=self._now)
        else:
            self._req_bucket.resize_for_limit(rpm, burst_s=self._burst_s)

    def _set_tpm(self, tpm: float, min_burst: float = 1.0) -> None:
        if not tpm > 0:
            raise ValueError(f"tpm must be > 0 (got {tpm})")
        self._tpm = float(tpm)
        tpm = tpm * (self._share or 1.0)
        if self._tok_bucket is None:
            self._tok_bucket = TokenBucket.for_limit(
                tpm, burst_s=self._burst_s, min_burst=min_burst, clock=self._now
            )
        else:
            self._tok_bucket.resize_for_limit(tpm, burst_s=self._burst_s, min_burst=min_burst)

    def set_share(self, fraction: float) -> None:
        """Use only ``fraction`` of the rpm/tpm limits: this gate's lease of a fleet's quota.

        The buckets are resized (window-safe) to ``fraction`` of the configured or learned
        limits; 0 holds every grant until a share is given again. Used by
        ``engine.distributed``; a gate that is never given a share pays nothing for it.

        Raises:
            ValueError: ``fraction`` is not within [0, 1].
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"share must be within [0, 1] (got {fraction})")
        self._share = fraction
        self._held = fraction == 0.0
        if not self._held:
            if self._rpm is not None:
                self._set_rpm(self._rpm)
            if self._tpm is not None:
                self._set_tpm(self._tpm)
        self._pump()

    @property
    def adapting(self) -> bool:
        """Whether the concurrency limit is currently adapted by AIMD."""
        if self._adaptive == "auto":
            return self._rpm is None and self._tpm is None
        return bool(self._adaptive)

    def state(self) -> GateState:
        """A snapshot for metrics."""
        now = self._now()
        return GateState(
            concurrency_limit=self._aimd.limit,
            in_flight=self._in_flight,
            waiting=sum(1 for entry in self._heap if not entry[3].done()),
            rpm=self._rpm,
            tpm=self._tpm,
            paused_for=max(0.0, self._paused_until - now),
        )

    def expected_wait(self) -> float:
        """Rough seconds until a request joining the queue now would start (0: at once).

        The queue ahead is served as fast as the known buckets refill (requests, and
        tokens at the mean reservation) and, past the concurrency limit, as places free
        up at the mean latency; a 429 pause adds its remaining time. A pool of endpoints
        sends each call where it would start soonest, so members share the load in
        proportion to their quotas.
        """
        now = self._now()
        ahead = len(self._heap) + 1
        wait = self._paused_until - now
        req, tok = self._req_bucket, self._tok_bucket
        if req is not None and req.rate > 0:
            wait = max(wait, (ahead - req.level) / req.rate)
        if tok is not None and tok.rate > 0:
            wait = max(wait, (ahead * self._mean_tokens - tok.level) / tok.rate)
        over = self._in_flight + ahead - self._aimd.limit
        if over > 0:
            wait = max(wait, over / self._aimd.limit * self._mean_latency)
        return max(0.0, wait)

    def free_now(self) -> float:
        """About how many more requests could start at once (the pool's tie-breaker)."""
        free = self._aimd.limit - self._in_flight - len(self._heap)
        if self._req_bucket is not None:
            free = min(free, self._req_bucket.level)
        if self._tok_bucket is not None and self._mean_tokens > 0:
            free = min(free, self._tok_bucket.level / self._mean_tokens)
        return free

    # ------------------------------------------------------------- admission
    async def acquire(self, tokens: int = 0, priority: int = 0) -> Permit:
        """Wait for a place at the gate for a request reserving ``tokens``.

        Args:
            tokens: the reservation (prompt estimate + max_tokens).
            priority: higher goes first (use the pipeline depth of the stage).

        Raises:
            EndpointUnusable: the request alone needs more tokens than a whole minute's
                quota, or the endpoint failed (a wait over ``max_wait_s``).
            Draining: a drain's grace is over and the call cannot start at once.
        """
        if self._failure is not None:
            raise self._failure
        if self._tpm is not None and tokens > self._tpm:
            # The run halts (the request can never be sent as configured); the gate stays
            # usable for the calls in flight.
            raise EndpointUnusable(
                f"a request reserves {tokens} tokens (prompt + max_tokens x n) but the "
                f"endpoint allows {self._tpm:.0f} tokens/min, so it can never be sent; "
                "lower max_tokens, shorten the prompt or raise tpm",
                endpoint=self.name,
            )
        if not self._heap:
            permit = self._try_grant(tokens)
            if permit is not None:
                return permit
        if self._drain_deadline <= self._now():
            raise Draining(f"endpoint {self.name!r}: stopping, and this call would have to wait")
        fut: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (-priority, next(self._seq), tokens, fut))
        if len(self._heap) == 1:
            self._pump()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted and cancelled in the same tick: hand the place back.
                self.release(fut.result(), outcome="cancelled")
            else:
                self._pump()
            raise

    def _wait_for(self, tokens: int, now: float) -> float:
        """Seconds until a request of ``tokens`` could start, ignoring concurrency."""
        if self._held:
            return math.inf  # no lease: set_share() pumps again
        wait = self._paused_until - now
        if self._req_bucket is not None:
            # Capped: below 2 rpm the window-safe burst is under one request.
            wait = max(wait, self._req_bucket.time_until_capped(1))
        if self._tok_bucket is not None and tokens > 0:
            if (
                tokens > self._tok_bucket.capacity
                and self._tpm is not None
                and tokens <= self._tpm / 2
            ):
                # Grow the burst to fit the largest request, keeping the window bound.
                self._set_tpm(self._tpm, min_burst=tokens)
            wait = max(wait, self._tok_bucket.time_until_capped(tokens))
        return wait

    def _full(self) -> bool:
        """No room for another request now (the limit, or a probe draining or alone)."""
        if self._aimd.probe:
            return self._aimd.probe == 2 or self._in_flight > 0
        return self._in_flight >= self._aimd.limit

    def _try_grant(self, tokens: int) -> Permit | None:
        if self._full():
            return None
        now = self._now()
        if self._wait_for(tokens, now) > 0:
            return None
        return self._grant(tokens, now)

    def _grant(self, tokens: int, now: float) -> Permit:
        if self._req_bucket is None or self._tok_bucket is None:
            if self._first_grant_at is None:
                self._first_grant_at = now
            self._granted_requests += 1
            self._granted_tokens += tokens
        if self._req_bucket is not None:
            self._req_bucket.charge(1)
        if self._tok_bucket is not None and tokens > 0:
            self._tok_bucket.charge(tokens)
        self._in_flight += 1
        if self._aimd.probe == 1:
            self._aimd.probe = 2  # this request is the probe: alone until it returns
        self._mean_tokens += _MEAN_ALPHA * (tokens - self._mean_tokens)
        return Permit(
            tokens,
            now,
            self._aimd.epoch,
            paced=self._req_bucket is not None or self._tok_bucket is not None,
            ticket=self._ledger.on_send(tokens),
        )

    def _pump(self) -> None:
        """Grant waiters from the head of the heap while they can start now."""
        heap = self._heap
        while heap:
            _, _, tokens, fut = heap[0]
            if fut.done():  # cancelled while waiting
                heapq.heappop(heap)
                continue
            if self._full():
                return  # a release will pump again
            now = self._now()
            wait = self._wait_for(tokens, now)
            if wait > 0:
                if wait == math.inf:
                    return  # held: no lease (set_share pumps again)
                # Under a fleet's lease the buckets refill at the share's rate: that much
                # of the wait is the fleet's pacing, not the server's doing.
                if wait * self._share > self._max_wait:
                    self._fail(
                        EndpointUnusable(
                            f"the endpoint's limits would hold the next call for {wait:,.0f} s, "
                            f"more than max_wait_s = {self._max_wait:g}; "
                            f"{self._hold_detail(now)}; rerun later to resume",
                            endpoint=self.name,
                        )
                    )
                    return
                if now + wait > self._drain_deadline:
                    self._fail_waiters(self._draining())
                    return
                self._arm(now + wait, now)
                return
            heapq.heappop(heap)
            fut.set_result(self._grant(tokens, now))

    def _hold_detail(self, now: float) -> str:
        """What holds the queue: the pause, or the buckets' levels."""
        if self._paused_until > now:
            return f"paused by the server for {self._paused_until - now:,.0f} s"
        parts = []
        if self._req_bucket is not None and self._req_bucket.level < 1:
            parts.append(f"requests bucket at {self._req_bucket.level:,.1f}")
        if self._tok_bucket is not None:
            parts.append(f"tokens bucket at {self._tok_bucket.level:,.0f}")
        return ", ".join(parts) or "rate limits"

    def _draining(self) -> Draining:
        return Draining(f"endpoint {self.name!r}: stopping, and this call would have to wait")

    def _fail_waiters(self, error: RunHalted) -> None:
        """Fail every call waiting in the queue with ``error``."""
        heap, self._heap = self._heap, []
        for _, _, _, fut in heap:
            if not fut.done():
                fut.set_exception(error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _fail(self, error: EndpointUnusable) -> EndpointUnusable:
        """The endpoint failed as a whole: fail the waiters and every later call."""
        if self._failure is None:
            self._failure = error
        self._fail_waiters(self._failure)
        return error

    @property
    def failure(self) -> RunHalted | None:
        """Why the endpoint failed as a whole (None while it is usable)."""
        return self._failure

    def fail(self, error: EndpointUnusable) -> None:
        """Mark the endpoint failed as a whole (e.g. its key was refused mid-run).

        Calls waiting now and every later :meth:`acquire` raise ``error``; calls in flight
        finish as they will.
        """
        self._fail(error)

    def drain(self, grace_s: float = 5.0) -> None:
        """A stop was asked: calls that cannot start within ``grace_s`` give up.

        Waiting calls whose start is held past the grace (a pause, a bucket) fail at once
        with :class:`~engine.errors.Draining`; the others fail when the grace ends; a call
        arriving after it fails unless it can start at once. Items whose calls give up are
        left undone and redone by the next run.
        """
        now = self._now()
        self._drain_deadline = min(self._drain_deadline, now + max(0.0, grace_s))
        self._schedule(max(0.0, self._drain_deadline - now), self._on_drain_deadline)
        self._pump()

    def _on_drain_deadline(self) -> None:
        if self._heap:
            self._fail_waiters(self._draining())

    def _arm(self, at: float, now: float) -> None:
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._schedule(at - now, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._pump()

    # --------------------------------------------------------------- release
    def release(
        self,
        permit: Permit,
        *,
        outcome: Outcome = "ok",
        used_tokens: int | None = None,
        rate: RateInfo | None = None,
        retry_after: float | None = None,
        latency: float | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        """Give a place back and learn from how the request went.

        Args:
            permit: what :meth:`acquire` returned (releasing twice is a no-op).
            outcome: "ok"; "rate_limited" (429); "overloaded" (5xx, timeout, reset);
                "error" (other failures, no signal); "cancelled" (never reached the server).
            used_tokens: total tokens the response reported (reconciles the reservation).
            rate: the response's rate-limit headers.
            retry_after: the server's Retry-After, in seconds, on a 429.
            latency: seconds the request took (for queueing detection).
            completion_tokens: output tokens (normalises latency by length).
        """
        if permit.released:
            return
        permit.released = True
        self._in_flight -= 1
        now = self._now()
        if outcome == "ok":
            self._mean_latency += _MEAN_ALPHA * (now - permit.started_at - self._mean_latency)
        if self._tok_bucket is not None and permit.tokens:
            if outcome == "cancelled":
                self._tok_bucket.refund(permit.tokens)
            elif used_tokens is not None:
                diff = permit.tokens - used_tokens
                if diff > 0:
                    self._tok_bucket.refund(diff)
                elif diff < 0:
                    self._tok_bucket.charge(-diff)
        if outcome == "cancelled" and self._req_bucket is not None:
            self._req_bucket.refund(1)
        unacknowledged = self._ledger.on_answer(permit.ticket, permit.tokens)
        if rate is not None:
            self._learn(rate, unacknowledged if outcome == "ok" else None)
        if outcome == "rate_limited":
            self._on_rate_limited(permit, retry_after, now)
        elif outcome == "overloaded":
            if self.adapting:
                self._aimd.decrease(permit.epoch)
        elif outcome == "ok":
            self._consecutive_429 = 0
            if self.adapting:
                self._aimd.on_success(latency, completion_tokens, alone=self._aimd.probe == 2)
        if self._aimd.probe == 2 and self._in_flight == 0:
            self._aimd.probe = 0  # the probe is back (or failed): the limit applies again
        self._pump()

    def _learn(self, rate: RateInfo, unacknowledged: tuple[int, float] | None = None) -> None:
        """Tighten the buckets from the server's x-ratelimit-* headers, or raise them to the
        burst they grant (``unacknowledged``: other sends the headers may not count; see
        :mod:`engine.llm.burst`)."""
        # Requests sent before the limit was known count against the first minute.
        recent = self._first_grant_at is not None and self._now() - self._first_grant_at < 60.0
        lr = rate.limit_requests
        if lr is not None and lr > 0:
            target = lr if self._configured_rpm is None else min(lr, self._configured_rpm)
            if self._rpm is None or abs(target - self._rpm) > 1e-9:
                learned = self._req_bucket is None
                self._set_rpm(target)
                if learned and recent and self._req_bucket is not None:
                    self._req_bucket.charge(self._granted_requests)
        lt = rate.limit_tokens
        if lt is not None and lt > 0:
            target = lt if self._configured_tpm is None else min(lt, self._configured_tpm)
            if self._tpm is None or abs(target - self._tpm) > 1e-9:
                learned = self._tok_bucket is None
                self._set_tpm(target)
                if learned and recent and self._tok_bucket is not None:
                    self._tok_bucket.charge(self._granted_tokens)
        # The burst the server grants: only for limits learned from headers (a configured
        # limit is a 60 s window promise), without a fleet's lease, until a paced 429.
        req_credit = tok_credit = None
        if unacknowledged is not None and self._credit_on and self._share == 1.0:
            if self._configured_rpm is None:
                req_credit = credit(
                    rate.remaining_requests,
                    rate.reset_requests,
                    lr or self._rpm,
                    unacknowledged[0],
                )
            if self._configured_tpm is None:
                tok_credit = credit(
                    rate.remaining_tokens, rate.reset_tokens, lt or self._tpm, unacknowledged[1]
                )
        # What the server has left, less what we have sent that it may not have counted
        # (unless its bucket is credited: after a burst they are counted in it already).
        # Never below empty: a server's "remaining: -5000000" is no debt we owe (the
        # window it counts resets on its own), and honouring it would wait for days.
        remaining = rate.remaining_requests
        if remaining is not None and self._req_bucket is not None:
            in_flight = 0 if req_credit is not None else self._in_flight
            self._req_bucket.clamp(max(0.0, remaining) - in_flight)
            if req_credit is not None:
                self._req_bucket.credit(req_credit, capacity=max(req_credit, remaining))
        remaining = rate.remaining_tokens
        if remaining is not None and self._tok_bucket is not None:
            self._tok_bucket.clamp(max(0.0, remaining))
            if tok_credit is not None:
                self._tok_bucket.credit(tok_credit, capacity=max(tok_credit, remaining))
        if self._adaptive == "auto" and not self.adapting:
            # Known limits bound the endpoint from now on (buckets pace, 429s pause):
            # cuts AIMD made while they were unknown no longer apply.
            self._aimd.reset()

    def _stop_crediting(self) -> None:
        """A paced request got a 429: pace window-safe from now on (buckets reshaped)."""
        self._credit_on = False
        if self._rpm is not None and self._req_bucket is not None:
            self._set_rpm(self._rpm)
        if self._tpm is not None and self._tok_bucket is not None:
            self._set_tpm(self._tpm)

    def _on_rate_limited(self, permit: Permit, retry_after: float | None, now: float) -> None:
        self._consecutive_429 += 1
        if permit.paced and self._credit_on:
            self._stop_crediting()
        if retry_after is not None and retry_after > self._max_wait:
            self._fail(
                EndpointUnusable(
                    f"HTTP 429 asks to wait {retry_after:,.0f} s (Retry-After), more than "
                    f"max_wait_s = {self._max_wait:g}; the quota may be exhausted for the day; "
                    "rerun later to resume",
                    endpoint=self.name,
                    status=429,
                )
            )
            return
        if retry_after is None:
            retry_after = min(60.0, 1.0 * 2 ** (self._consecutive_429 - 1))
        self._paused_until = max(self._paused_until, now + retry_after)
        # Pace back up: resume from empty buckets, so the refill rate meters the
        # restart instead of a burst of every waiter at once. The buckets refill during
        # the pause, so they are emptied as of its end (a debt of the pause's refill).
        pause = self._paused_until - now
        if self._req_bucket is not None:
            self._req_bucket.clamp(-pause * self._req_bucket.rate)
        if self._tok_bucket is not None:
            self._tok_bucket.clamp(-pause * self._tok_bucket.rate)
        if self.adapting:
            self._aimd.decrease(permit.epoch)
