"""Fault injection decisions of the simulated endpoint.

A request gets a fault when the server's clock is inside a scheduled window (every
request then gets that window's kind), or else with probability ``fault_rate``. The
random draw is deterministic: it hashes the request digest (seed + body) with a
per-server attempt counter for that body, so the n-th attempt of the same body always
draws the same, and a retry of a faulted body can succeed.
"""

from __future__ import annotations

import hashlib

from .model import SimSettings

__all__ = ("FaultPlan",)

# Bounds memory on long runs with many distinct bodies; forgetting counts only restarts
# the attempt sequence of those bodies.
_MAX_TRACKED_BODIES = 200_000


class FaultPlan:
    """Decides, per request, which fault (if any) to inject, and counts them.

    Args:
        settings: the server's settings (``fault_rate``, ``faults``, ``schedule``).

    Attributes:
        injected: faults injected so far, by kind.
    """

    def __init__(self, settings: SimSettings) -> None:
        self._rate = settings.fault_rate
        self._kinds = tuple(settings.faults)
        self._schedule = tuple(settings.schedule)
        self._attempts: dict[bytes, int] = {}
        self.injected: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """True when this plan can ever inject a fault."""
        return bool(self._schedule) or (self._rate > 0.0 and bool(self._kinds))

    def decide(self, digest: bytes, elapsed_s: float) -> str | None:
        """The fault kind for one request attempt, or None.

        Args:
            digest: the request digest (see :func:`engine.sim.model.request_digest`).
            elapsed_s: seconds since the server started (for scheduled windows).
        """
        for window in self._schedule:
            if window.start_s <= elapsed_s < window.end_s:
                return self._count(window.kind)
        if self._rate <= 0.0 or not self._kinds:
            return None
        attempts = self._attempts
        attempt = attempts.get(digest, 0)
        if len(attempts) >= _MAX_TRACKED_BODIES and attempt == 0:
            attempts.clear()
        attempts[digest] = attempt + 1
        draw = hashlib.blake2b(digest + attempt.to_bytes(8, "big"), digest_size=16).digest()
        if int.from_bytes(draw[:8], "big") / 2.0**64 >= self._rate:
            return None
        return self._count(self._kinds[int.from_bytes(draw[8:], "big") % len(self._kinds)])

    def _count(self, kind: str) -> str:
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind
