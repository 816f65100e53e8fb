"""An exact, weighted token bucket with debt, refunds and window-safe sizing.

The bucket is pure bookkeeping: it never sleeps. It answers "may I take n now?" and
"how long until n are available?"; the gate turns that answer into one timer.

Window safety: a provider quota of ``L`` per minute is honoured by any 60-second window
when the bucket holds at most ``B`` and refills at ``(L - B) / 60`` per second, since
what can be taken in a window is at most what was held at its start plus what refilled
during it: ``B + 60 * (L - B) / 60 = L``. :meth:`TokenBucket.for_limit` sizes buckets
that way, so pacing uses ``1 - B/L`` of the quota (98.3% with the default one-second
burst) and never overshoots a window.

Why not aiolimiter: it is an exact weighted leaky bucket, but it has no way to return
an over-reservation (prompt estimate + max_tokens vs. the reported usage), to charge a
debt when usage exceeds the reservation, to clamp the level to what the server's
``x-ratelimit-remaining-*`` headers report, to raise it to the burst a server grants
(:meth:`TokenBucket.credit`), or to resize a live bucket when headers reveal the limit.
Those operations are the reason this module exists.
"""

from __future__ import annotations

import math

from ..clock import Clock, monotonic

__all__ = ("TokenBucket",)

# Units that will have refilled within this many seconds count as present. Without this
# slack ``time_until`` is not exact in floating point: after waiting exactly the time it
# returned, the refilled level can fall a rounding error short of ``n`` (about one case
# in ten), and a caller that re-arms a timer for the tiny remainder spins forever on a
# clock where ``now + remainder == now`` (the gate on a FakeClock did).
_SLACK_S = 1e-6


class TokenBucket:
    """A bucket of ``capacity`` units refilled continuously at ``rate`` units per second.

    The level may go negative (a debt) through :meth:`charge`; it then has to refill
    past zero before anything can be taken again.

    Args:
        capacity: the most the bucket holds (the burst). Must be > 0.
        rate: refill in units per second. Must be > 0.
        clock: monotonic time source.
        level: starting level (default: full).
    """

    __slots__ = ("_capacity", "_clock", "_level", "_rate", "_t")

    def __init__(
        self,
        capacity: float,
        rate: float,
        *,
        clock: Clock = monotonic,
        level: float | None = None,
    ) -> None:
        if not capacity > 0 or not rate > 0:
            raise ValueError(f"capacity and rate must be > 0 (got {capacity}, {rate})")
        self._capacity = float(capacity)
        self._rate = float(rate)
        self._clock = clock
        self._level = self._capacity if level is None else min(float(level), self._capacity)
        self._t = clock()

    @classmethod
    def for_limit(
        cls,
        per_minute: float,
        *,
        burst_s: float = 1.0,
        min_burst: float = 1.0,
        clock: Clock = monotonic,
    ) -> TokenBucket:
        """A bucket that never lets more than ``per_minute`` through any 60 s window.

        The burst is ``burst_s`` seconds' worth of the limit (at least ``min_burst``),
        and the refill rate leaves room for it (see the module docstring).
        """
        if not per_minute > 0:
            raise ValueError(f"limit must be > 0 (got {per_minute})")
        burst = min(max(per_minute * burst_s / 60.0, min_burst), per_minute / 2.0)
        return cls(burst, (per_minute - burst) / 60.0, clock=clock)

    @property
    def capacity(self) -> float:
        """The most the bucket can hold."""
        return self._capacity

    @property
    def rate(self) -> float:
        """Refill in units per second."""
        return self._rate

    @property
    def level(self) -> float:
        """Current level (refilled up to now); negative while in debt."""
        self._refill()
        return self._level

    def _refill(self) -> None:
        now = self._clock()
        dt = now - self._t
        if dt > 0:
            self._level = min(self._capacity, self._level + dt * self._rate)
            self._t = now

    def try_take(self, n: float) -> bool:
        """Take ``n`` units if they are there now; return whether it did."""
        self._refill()
        if self._level + _SLACK_S * self._rate >= n:
            self._level -= n
            return True
        return False

    def time_until(self, n: float) -> float:
        """Seconds until ``n`` units will be available (0 if they are now).

        ``n`` above capacity can never be held at once: callers must cap it (see
        :meth:`take_capped`); here it returns ``math.inf``.
        """
        if n > self._capacity:
            return math.inf
        self._refill()
        deficit = n - self._level
        return 0.0 if deficit <= _SLACK_S * self._rate else deficit / self._rate

    def take_capped(self, n: float) -> bool:
        """Take ``n`` units, where ``n`` may exceed capacity, once the bucket is full enough.

        Up to ``capacity`` units must be present; the rest is charged as debt. Used for a
        single request costlier than the burst: it waits for a full bucket, then goes.
        """
        self._refill()
        need = min(n, self._capacity)
        if self._level + _SLACK_S * self._rate >= need:
            self._level -= n
            return True
        return False

    def time_until_capped(self, n: float) -> float:
        """Seconds until :meth:`take_capped` of ``n`` can succeed."""
        return self.time_until(min(n, self._capacity))

    def charge(self, n: float) -> None:
        """Take ``n`` units unconditionally (the level may go negative)."""
        self._refill()
        self._level -= n

    def refund(self, n: float) -> None:
        """Give back ``n`` units (never above capacity)."""
        self._refill()
        self._level = min(self._capacity, self._level + n)

    def clamp(self, at_most: float) -> None:
        """Lower the level to ``at_most`` if it is above (never raises it)."""
        self._refill()
        if self._level > at_most:
            self._level = at_most

    def credit(self, level: float, *, capacity: float) -> bool:
        """Raise the level to ``level`` if it is below, growing the capacity to fit.

        The capacity becomes at least ``capacity`` (and ``level``); the rate is unchanged,
        and nothing is ever lowered. Used with what a server reports is left of its own
        bucket (:mod:`engine.llm.burst`). Returns whether the level rose.
        """
        self._refill()
        self._capacity = max(self._capacity, float(capacity), float(level))
        if level > self._level:
            self._level = float(level)
            return True
        return False

    def resize(self, capacity: float, rate: float) -> None:
        """Change capacity and rate in place, keeping the level (capped at the new capacity)."""
        if not capacity > 0 or not rate > 0:
            raise ValueError(f"capacity and rate must be > 0 (got {capacity}, {rate})")
        self._refill()
        self._capacity = float(capacity)
        self._rate = float(rate)
        self._level = min(self._level, self._capacity)

    def resize_for_limit(
        self, per_minute: float, *, burst_s: float = 1.0, min_burst: float = 1.0
    ) -> None:
        """:meth:`resize` to the window-safe shape of :meth:`for_limit`."""
        burst = min(max(per_minute * burst_s / 60.0, min_burst), per_minute / 2.0)
        self.resize(burst, (per_minute - burst) / 60.0)
