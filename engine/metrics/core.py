"""Run metrics: plain mutable state, cheap to update on the hot path.

Nothing here renders or owns a thread or a task. Recording an event is a handful of
integer and float updates (plus one clock read where time matters); the UI
(:mod:`engine.metrics.progress`) and the report (:mod:`engine.metrics.report`) only
read this state. There is no global state: an :class:`~engine.Engine` creates one
:class:`Metrics` per run and hands its parts to the components that feed them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..clock import Clock, monotonic
from ..records import reason_of

__all__ = ("EndpointStats", "Histogram", "Metrics", "StageStats")

# Histogram layout, shared by every histogram so any two can be merged.
_MIN_S = 1e-4  # 0.1 ms: everything below lands in the underflow bucket 0
_MAX_S = 3600.0  # 1 hour: everything at or above lands in the overflow (last) bucket
_GROWTH = 1.05  # each bucket is 5% wider than the one before
_INV_LOG_GROWTH = 1.0 / math.log(_GROWTH)
_NUM_RANGE = math.ceil(math.log(_MAX_S / _MIN_S) * _INV_LOG_GROWTH)
_NUM_BUCKETS = _NUM_RANGE + 2  # underflow + range buckets + overflow
_LAST = _NUM_BUCKETS - 1

# Ring of per-second buckets for live rates (longest supported window, in seconds).
_RING_S = 600


class Histogram:
    """A log-bucketed histogram of durations in seconds.

    Bucket ``i`` (1 <= i <= N) covers ``[0.1 ms * 1.05**(i-1), 0.1 ms * 1.05**i)``;
    bucket 0 holds smaller values and the last bucket values of an hour or more.
    Percentiles are therefore accurate to within a bucket (about 5%, relative); the
    exact minimum, maximum, count and sum are kept alongside.

    Attributes:
        count: number of recorded values.
        sum: sum of recorded values (seconds).
        min: smallest recorded value (``inf`` when empty).
        max: largest recorded value (0.0 when empty).
        buckets: the bucket counts.
    """

    __slots__ = ("buckets", "count", "max", "min", "sum")

    def __init__(self) -> None:
        self.buckets: list[int] = [0] * _NUM_BUCKETS
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        """Add one value (negative values count as 0)."""
        if seconds < _MIN_S:
            if seconds < 0.0:
                seconds = 0.0
            self.buckets[0] += 1
        elif seconds < _MAX_S:
            i = int(math.log(seconds / _MIN_S) * _INV_LOG_GROWTH) + 1
            self.buckets[i if i < _LAST else _LAST] += 1
        elif seconds != seconds:  # NaN: not a duration
            return
        else:
            self.buckets[_LAST] += 1
        self.count += 1
        self.sum += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    @property
    def mean(self) -> float:
        """Mean of the recorded values (0.0 when empty)."""
        return self.sum / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (``q`` in 0..100, nearest rank), in seconds.

        Returns the geometric middle of the bucket holding the rank, clamped to the
        exact minimum and maximum; 0.0 when nothing was recorded.
        """
        if self.count == 0:
            return 0.0
        q = min(100.0, max(0.0, q))
        if q >= 100.0:
            return self.max
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        index = _LAST
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                index = i
                break
        if index == 0:
            value = _MIN_S / 2.0
        elif index == _LAST:
            value = self.max
        else:
            value = _MIN_S * _GROWTH ** (index - 0.5)
        return min(self.max, max(self.min, value))

    def merge(self, other: Histogram) -> None:
        """Add every value recorded in ``other`` to this histogram."""
        mine = self.buckets
        for i, n in enumerate(other.buckets):
            if n:
                mine[i] += n
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def to_dict(self) -> dict[str, float]:
        """Summary in milliseconds: ``p50 p90 p95 p99 max mean`` and ``count``."""
        return {
            "p50": self.percentile(50) * 1000.0,
            "p90": self.percentile(90) * 1000.0,
            "p95": self.percentile(95) * 1000.0,
            "p99": self.percentile(99) * 1000.0,
            "max": self.max * 1000.0,
            "mean": self.mean * 1000.0,
            "count": self.count,
        }


class EndpointStats:
    """Counters and gauges for one endpoint; fits ``engine.llm.caller.CallObserver``.

    Counters only grow. ``requests`` counts HTTP attempts (retries included, cache
    hits excluded); token counters count tokens paid for in this run (replayed cache
    hits are counted apart, in ``cached_*_tokens``).

    Args:
        name: the endpoint's config name.
        clock: monotonic seconds (used for the in-flight time average and live rates).

    Attributes:
        name: the endpoint's config name.
        requests: HTTP attempts started.
        ok: attempts that returned a response.
        errors: failed attempts by error kind (e.g. ``rate_limited``, ``timeout``).
        cancelled: attempts abandoned because the calling task was cancelled.
        http_429: attempts answered with HTTP 429.
        retries: retries scheduled after a failed attempt.
        cache_hits: calls answered from the response cache.
        prompt_tokens: prompt tokens of finished attempts.
        completion_tokens: completion tokens of finished attempts.
        cached_prompt_tokens: prompt tokens of replayed cache hits.
        cached_completion_tokens: completion tokens of replayed cache hits.
        in_flight: attempts currently in flight.
        max_in_flight: most attempts ever in flight at once.
        latency: attempt latency (successful attempts).
        ttft: time to first token (streamed successful attempts).
        concurrency_limit: the gate's current concurrency limit (set by the engine).
        rpm_limit: requests-per-minute limit, configured or learned (set by the engine).
        tpm_limit: tokens-per-minute limit, configured or learned (set by the engine).
        last_ok_at: clock time a call was last answered (by the endpoint or the cache).
    """

    __slots__ = (
        "_active_from",
        "_area",
        "_changed_at",
        "_ring_req",
        "_ring_sec",
        "_ring_tok",
        "cache_hits",
        "cached_completion_tokens",
        "cached_prompt_tokens",
        "cancelled",
        "clock",
        "completion_tokens",
        "concurrency_limit",
        "errors",
        "http_429",
        "in_flight",
        "last_ok_at",
        "latency",
        "max_in_flight",
        "name",
        "ok",
        "prompt_tokens",
        "requests",
        "retries",
        "rpm_limit",
        "tpm_limit",
        "ttft",
    )

    def __init__(self, name: str, *, clock: Clock = monotonic) -> None:
        self.name = name
        self.clock = clock
        self.last_ok_at = -math.inf
        self.requests = 0
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.cancelled = 0
        self.http_429 = 0
        self.retries = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_prompt_tokens = 0
        self.cached_completion_tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.latency = Histogram()
        self.ttft = Histogram()
        self.concurrency_limit: float | None = None
        self.rpm_limit: float | None = None
        self.tpm_limit: float | None = None
        # Time integral of in_flight since the first attempt started.
        self._active_from: float | None = None
        self._changed_at = 0.0
        self._area = 0.0
        # Per-second ring: absolute second, finished attempts, tokens.
        self._ring_sec: list[int] = [-1] * _RING_S
        self._ring_req: list[int] = [0] * _RING_S
        self._ring_tok: list[int] = [0] * _RING_S

    # ------------------------------------------------------------ recording
    def on_start(self) -> None:
        """An HTTP attempt was sent."""
        now = self.clock()
        if self._active_from is None:
            self._active_from = now
        else:
            self._area += self.in_flight * (now - self._changed_at)
        self._changed_at = now
        self.in_flight += 1
        self.requests += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def on_finish(
        self,
        latency_s: float,
        ok: bool,
        error_kind: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
    ) -> None:
        """An HTTP attempt ended (successfully or not).

        Args:
            latency_s: the attempt's duration (recorded for successful attempts).
            ok: whether a response arrived.
            error_kind: the error's kind when not ok (``cancelled`` is counted apart).
            prompt_tokens: prompt tokens used.
            completion_tokens: completion tokens used.
            ttft_s: time to first token, for streamed responses.
        """
        now = self.clock()
        if self.in_flight > 0:
            self._area += self.in_flight * (now - self._changed_at)
            self._changed_at = now
            self.in_flight -= 1
        if ok:
            self.ok += 1
            self.last_ok_at = now
            self.latency.record(latency_s)
            if ttft_s is not None:
                self.ttft.record(ttft_s)
        elif error_kind == "cancelled":
            self.cancelled += 1
        else:
            kind = error_kind or "error"
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if kind == "rate_limited":
                self.http_429 += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        sec = int(now)
        slot = sec % _RING_S
        if self._ring_sec[slot] != sec:
            self._ring_sec[slot] = sec
            self._ring_req[slot] = 1
            self._ring_tok[slot] = prompt_tokens + completion_tokens
        else:
            self._ring_req[slot] += 1
            self._ring_tok[slot] += prompt_tokens + completion_tokens

    def on_retry(self) -> None:
        """A failed attempt will be retried."""
        self.retries += 1

    def on_cache_hit(self, prompt_tokens: int, completion_tokens: int) -> None:
        """A call was answered from the response cache (nothing was sent)."""
        self.cache_hits += 1
        self.last_ok_at = self.clock()
        self.cached_prompt_tokens += prompt_tokens
        self.cached_completion_tokens += completion_tokens

    # -------------------------------------------------------------- reading
    @property
    def total_errors(self) -> int:
        """Failed attempts of every kind (cancellations excluded)."""
        return sum(self.errors.values())

    @property
    def mean_in_flight(self) -> float:
        """Time-weighted mean of ``in_flight`` while the endpoint was in use.

        Averaged from the first attempt's start to now (while attempts are in flight)
        or to the last change (when idle); 0.0 before any attempt.
        """
        start = self._active_from
        if start is None:
            return 0.0
        area = self._area
        end = self._changed_at
        if self.in_flight:
            now = self.clock()
            area += self.in_flight * (now - end)
            end = now
        span = end - start
        if span <= 0.0:
            return float(self.in_flight)
        return area / span

    def rates(self, window_s: float = 60.0) -> tuple[float, float]:
        """Live ``(requests per minute, tokens per minute)`` over the last ``window_s``.

        Counts attempts that finished in the last ``window_s`` whole seconds (the
        current second included; at most 600 s). The window is shortened to the time
        since the first attempt so that rates are not diluted right after the start.
        """
        start = self._active_from
        if start is None:
            return 0.0, 0.0
        window = int(min(float(_RING_S), max(1.0, window_s)))
        now = self.clock()
        now_sec = int(now)
        oldest = now_sec - window
        requests = 0
        tokens = 0
        ring_sec = self._ring_sec
        for slot in range(_RING_S):
            sec = ring_sec[slot]
            if oldest < sec <= now_sec:
                requests += self._ring_req[slot]
                tokens += self._ring_tok[slot]
        span = min(float(window), max(1.0, now - start))
        return requests * 60.0 / span, tokens * 60.0 / span

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state."""
        rpm, tpm = self.rates()
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "cancelled": self.cancelled,
            "http_429": self.http_429,
            "retries": self.retries,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cached_completion_tokens": self.cached_completion_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "mean_in_flight": self.mean_in_flight,
            "latency_ms": self.latency.to_dict(),
            "ttft_ms": self.ttft.to_dict(),
            "concurrency_limit": self.concurrency_limit,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "rpm": rpm,
            "tpm": tpm,
        }


class StageStats:
    """Counters for one pipeline stage; fits ``engine.stages.StageObserver``.

    Args:
        name: the stage's name.

    Attributes:
        name: the stage's name.
        calls: model calls made by the stage (parse retries included).
        ok: calls whose reply parsed.
        failed: calls that failed (endpoint error, or parse retries exhausted).
        parse_errors: replies that did not parse.
        latency: call latency, when fed through :meth:`record`.
        prompt_tokens: prompt tokens, when fed through :meth:`record`.
        completion_tokens: completion tokens, when fed through :meth:`record`.
    """

    __slots__ = (
        "calls",
        "completion_tokens",
        "failed",
        "latency",
        "name",
        "ok",
        "parse_errors",
        "prompt_tokens",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.parse_errors = 0
        self.latency = Histogram()
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def record(self, latency_s: float, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Add one call's latency and tokens."""
        self.latency.record(latency_s)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "calls": self.calls,
            "ok": self.ok,
            "failed": self.failed,
            "parse_errors": self.parse_errors,
            "latency_ms": self.latency.to_dict(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


_MAX_REASONS = 100  # distinct reasons counted per kind; more are "other"


class Metrics:
    """The registry of one run's metrics.

    Args:
        clock: monotonic seconds, shared with every :class:`EndpointStats` created here.

    Attributes:
        clock: the clock.
        endpoints: endpoint name -> stats (see :meth:`endpoint`).
        stages: stage name -> stats (see :meth:`stage`).
        items_total: number of input items, when known.
        items_started: items handed to the method.
        items_done: items finished in this run (rows written).
        items_skipped: items skipped because an earlier run finished them.
        rows: rows written by kind (``kept``, ``rejected``, ``failed``).
        reasons: for ``rejected`` and ``failed`` rows, why, grouped (see :func:`reason_of`).
        started_at: clock time the metrics were created.
        last_progress_at: clock time an item last finished (a watchdog reads it).
    """

    def __init__(self, *, clock: Clock = monotonic) -> None:
        self.clock = clock
        self.endpoints: dict[str, EndpointStats] = {}
        self.stages: dict[str, StageStats] = {}
        self.items_total: int | None = None
        self.items_started = 0
        self.items_done = 0
        self.items_skipped = 0
        self.rows: dict[str, int] = {"kept": 0, "rejected": 0, "failed": 0}
        # kind -> why rows of that kind were not kept (see reason_of) -> count
        self.reasons: dict[str, dict[str, int]] = {}
        self.started_at = clock()
        self.last_progress_at = self.started_at

    def endpoint(self, name: str) -> EndpointStats:
        """The stats of endpoint ``name`` (created on first use)."""
        stats = self.endpoints.get(name)
        if stats is None:
            stats = self.endpoints[name] = EndpointStats(name, clock=self.clock)
        return stats

    def stage(self, name: str) -> StageStats:
        """The stats of stage ``name`` (created on first use)."""
        stats = self.stages.get(name)
        if stats is None:
            stats = self.stages[name] = StageStats(name)
        return stats

    def elapsed(self) -> float:
        """Seconds since the metrics were created."""
        return self.clock() - self.started_at

    def last_activity_at(self) -> float:
        """Clock time a row was last written or a call last answered (for the watchdog:
        a long prepare phase, e.g. CodecLM encoding a million seeds, writes no rows but
        is not stuck)."""
        answered = max((ep.last_ok_at for ep in self.endpoints.values()), default=-math.inf)
        return max(self.last_progress_at, answered)

    def mark_progress(self) -> None:
        """Record that the run made progress now (see ``last_progress_at``)."""
        self.last_progress_at = self.clock()

    def add_row(self, kind: str, row: Mapping[str, object] | None = None) -> None:
        """Count one written row of ``kind`` (and, from ``row``, why it was not kept)."""
        self.rows[kind] = self.rows.get(kind, 0) + 1
        self.last_progress_at = self.clock()
        if row is not None and kind != "kept":
            reason = reason_of(kind, row)
            counts = self.reasons.setdefault(kind, {})
            if reason not in counts and len(counts) >= _MAX_REASONS:
                reason = "other"
            counts[reason] = counts.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The full state as JSON-able builtins."""
        now = self.clock()
        return {
            "elapsed_s": now - self.started_at,
            "idle_s": now - self.last_progress_at,
            "items": {
                "total": self.items_total,
                "started": self.items_started,
                "done": self.items_done,
                "skipped": self.items_skipped,
            },
            "rows": dict(self.rows),
            "reasons": {kind: dict(c) for kind, c in self.reasons.items()},
            "endpoints": {name: s.snapshot() for name, s in self.endpoints.items()},
            "stages": {name: s.snapshot() for name, s in self.stages.items()},
        }
