"""Time as an injectable dependency.

Everything that waits or measures time takes a ``Clock`` (a zero-argument callable
returning monotonic seconds as a float) and, where it must wake up later, a
``Scheduler`` (``call_later(delay, callback) -> handle with .cancel()``, the shape of
``asyncio.AbstractEventLoop.call_later``). Production code passes ``loop.time`` and
``loop.call_later``; tests pass a :class:`FakeClock`, which is both, and step it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ("Cancellable", "Clock", "FakeClock", "Scheduler", "monotonic")

Clock = Callable[[], float]

monotonic: Clock = time.monotonic


class Cancellable(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` fits)."""

    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Cancellable]


class _FakeHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to; also a :data:`Scheduler` for its own time.

    Call it to read the time; ``call_later`` registers a callback that ``advance``
    runs once its due time is reached, in due-time order.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, _FakeHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeHandle:
        """Run ``callback`` when the clock reaches ``now + delay``."""
        handle = _FakeHandle()
        heapq.heappush(
            self._timers, (self.now + max(0.0, delay), next(self._seq), handle, callback)
        )
        return handle

    def pending_timers(self) -> int:
        """Number of timers not yet run nor cancelled."""
        return sum(1 for _, _, h, _ in self._timers if not h.cancelled)

    def next_deadline(self) -> float | None:
        """Due time of the earliest live timer, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, handle, callback = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self.now = max(self.now, due)
            callback()
        self.now = target
