"""Retry policy as pure functions: which errors to retry, and how long to wait.

Decisions come from the error's class (:class:`engine.errors.RetryableError` or not);
delays are "full jitter" exponential backoff (AWS architecture blog), bounded, so
retries of many requests that failed together spread out instead of returning in a
wave. A server's Retry-After, when given, is a floor.
"""

from __future__ import annotations

import random

from ..errors import EngineError, RateLimited, RetryableError

__all__ = ("RetryPolicy",)


class RetryPolicy:
    """Bounded retries with jittered exponential backoff.

    Args:
        max_retries: attempts after the first (0: no retry).
        base_s: backoff scale of the first retry.
        cap_s: upper bound of one wait.
        rng: random source (seeded in tests).
    """

    __slots__ = ("base_s", "cap_s", "max_retries", "rng")

    def __init__(
        self,
        max_retries: int = 5,
        *,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.max_retries = max_retries
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng or random.Random()

    def should_retry(self, error: EngineError, attempt: int) -> bool:
        """Whether ``attempt`` (0-based, the one that just failed) may be followed by another."""
        return isinstance(error, RetryableError) and attempt < self.max_retries

    def delay(self, error: EngineError, attempt: int) -> float:
        """Seconds to wait before the next attempt after ``attempt`` failed with ``error``.

        A 429 waits nothing here: the gate has already paused the whole endpoint for
        the Retry-After, and the retry queues at the gate behind that pause.
        """
        if isinstance(error, RateLimited):
            return 0.0
        bound = min(self.cap_s, self.base_s * (2.0**attempt))
        wait = self.rng.uniform(0.0, bound)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap_s))
        return wait
