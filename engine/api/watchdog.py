"""The run's monitor: gate figures into metrics, endpoint overlap, and the watchdog.

The watchdog warns after ``run.watchdog_s`` without progress (no call answered, no row
written), and after ``run.watchdog_stop_s`` stops the run: a stop is asked (items in
flight may finish, waiting calls give up) and, if nothing finishes within a grace, the
phase in flight (:meth:`Monitor.watched`) is cancelled. Either way the run ends
resumably with a ``watchdog`` stop reason (exit code 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from ..config import RunConfig
from ..errors import Stalled
from ..metrics.core import Metrics
from .endpoints import Endpoints

__all__ = ("Monitor",)

log = logging.getLogger("engine")
T = TypeVar("T")

# After the watchdog stops a stalled run, items still in flight this long (at most; at
# most run.watchdog_stop_s too) are abandoned.
_STALL_GRACE_S = 30.0


class _Guarded(Protocol):
    """What the watchdog does with the phase it guards (an asyncio task)."""

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...


class Monitor:
    """Watches one run.

    Attributes:
        stall: set when the watchdog stopped the run (then the run's stop reason).
    """

    def __init__(self, run: RunConfig, metrics: Metrics, endpoints: Endpoints) -> None:
        self._run = run
        self._metrics = metrics
        self._endpoints = endpoints
        self.stall: Stalled | None = None
        self._guarded: _Guarded | None = None  # the phase the watchdog may cancel
        self._samples = 0
        self._all_busy = 0

    async def run(self, stop: asyncio.Event, interval: float = 0.1) -> None:
        """Every ``interval`` seconds: sync gate state, sample overlap, watch for stalls."""
        watchdog = self._run.watchdog_s
        stop_after = self._run.watchdog_stop_s
        warned_at = 0.0
        stalled_at = 0.0
        while True:
            await asyncio.sleep(interval)
            self._endpoints.sync_metrics()
            busy = [ep.gate.state().in_flight > 0 for ep in self._endpoints]
            if any(busy):
                self._samples += 1
                self._all_busy += all(busy)
            if watchdog > 0:
                now = self._metrics.clock()
                idle = now - self._metrics.last_activity_at()
                if idle > watchdog and now - warned_at > watchdog:
                    warned_at = now
                    detail = ", ".join(
                        f"{ep.name}: {st.in_flight} in flight, {st.waiting} waiting, "
                        f"paused {st.paused_for:.0f}s"
                        for ep in self._endpoints
                        for st in (ep.gate.state(),)
                    )
                    log.warning(
                        "no progress for %.0f s: no call answered, no row written (%s)",
                        idle,
                        detail,
                    )
            # Only while work is under way (prepare, items): waiting for other partitions
            # to finish before building derived datasets is not a stall.
            if stop_after > 0 and self._guarded is not None:
                now = self._metrics.clock()
                idle = now - self._metrics.last_activity_at()
                if self.stall is None and idle > stop_after:
                    self.stall = Stalled(
                        f"no progress for {idle:,.0f} s (run.watchdog_stop_s = {stop_after:g})"
                    )
                    stalled_at = now
                    log.warning("%s; stopping", self.stall)
                    stop.set()
                elif (
                    self.stall is not None
                    and now - stalled_at > min(_STALL_GRACE_S, stop_after)
                    and not self._guarded.done()
                ):
                    log.warning("items still stuck after the stop; abandoning them")
                    self._guarded.cancel()

    def overlap(self) -> dict[str, object]:
        """How often every endpoint had calls in flight at once (sampled every 0.1 s)."""
        n = self._samples
        return {
            "samples_with_traffic": n,
            "all_endpoints_busy": self._all_busy,
            "share_all_busy": round(self._all_busy / n, 3) if n else None,
        }

    async def watched(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` as a task the watchdog may cancel when the run stalls.

        Raises:
            Stalled: the watchdog cancelled it.
        """
        task: asyncio.Future[T] = asyncio.ensure_future(coro)
        self._guarded = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.stall is not None and (current is None or not current.cancelling()):
                raise self.stall from None
            raise
        finally:
            self._guarded = None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
