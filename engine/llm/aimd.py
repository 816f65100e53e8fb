"""The adaptive concurrency limit of an endpoint whose rate limits are unknown.

:class:`Aimd` is the gate's congestion controller: additive increase (one more place per
``limit`` successes), multiplicative decrease on an overload signal (a 429, a 5xx, a
timeout, a reset) and on queueing latency, and a probe that relearns the uncongested
latency. The gate asks it for ``limit`` and ``probe`` when it admits, and feeds it each
outcome while it adapts (:attr:`engine.llm.gate.Gate.adapting`).
"""

from __future__ import annotations

import math

__all__ = ("Aimd",)

# AIMD: multiplicative decrease on congestion, at most once per "epoch" (requests that
# started before the last decrease cannot trigger another one: cascade dampening).
_DECREASE = 0.75
# Latency-based congestion signal for servers that queue instead of returning 429 (Vegas-
# like, with Gradient2's default tolerance of 2): each latency is divided by the
# *uncongested* latency of requests with a similar output length (log2 buckets of
# completion tokens), tracked as a low quantile by an asymmetric average that falls fast
# (_BASE_DOWN) and rises slowly (_BASE_UP, at most that fraction of itself per request, so
# a server that is permanently slower is relearned over a few thousand requests while a
# long queue cannot drag the baseline up with it). A short-run average of that ratio above
# the tolerance means a queue is building; the limit then shrinks once per window of
# `limit` requests, in proportion to how far over the tolerance the ratio is (Gradient2's
# tolerance / ratio, between _LATENCY_MIN_FACTOR and _LATENCY_DECREASE), so a server that
# queues 64 requests it serves one at a time is brought down in a few windows, not dozens.
# After such a cut the gate probes (as BBR's ProbeRTT), the first time and then at most
# once per _PROBE_INTERVAL requests: it lets the requests in flight finish, sends one
# request alone and lowers the baseline to that latency. A baseline first learned during a
# burst (a server juggling 64 connections is slower even per request) is thus corrected,
# and the limit settles near twice the server's useful parallelism (the tolerance).
# Comparing like with like keeps output-length variety and steady jitter from reading as
# congestion (tests/unit/llm/test_gate_learning.py, test_gate_queueing.py).
_LATENCY_TOLERANCE = 2.0
_SHORT_ALPHA = 0.1
_BASE_DOWN = 0.03
_BASE_UP = 0.0005
_LATENCY_DECREASE = 0.9
_LATENCY_MIN_FACTOR = 0.5
_PROBE_INTERVAL = 200


class Aimd:
    """AIMD on the concurrency limit, with a latency signal and probing.

    Args:
        max_concurrency: the ceiling (the limit starts there and never exceeds it).
        min_concurrency: the floor of a decrease.

    Attributes:
        limit: the current concurrency limit.
        epoch: incremented by every decrease; a request started in an earlier epoch
            cannot cause another (cascade dampening).
        probe: 0, or 1 while the requests in flight drain before a probe (nothing is
            granted), 2 while the one probe request is alone.
        lat_base: per log2(completion tokens), the uncongested latency learned.
    """

    def __init__(self, max_concurrency: int, min_concurrency: int = 1) -> None:
        self.max = float(max_concurrency)
        self.min = float(max(1, min(min_concurrency, max_concurrency)))
        self.limit = self.max
        self.epoch = 0
        self.probe = 0
        self.lat_base: dict[int, float] = {}
        self._lat_ratio = 1.0  # short-run average of latency / uncongested latency
        self._successes = 0  # since the last change of the limit
        self._since_probe = _PROBE_INTERVAL  # successes since the last probe

    def reset(self) -> None:
        """Back to the ceiling, no probe (known limits bound the endpoint now)."""
        self.limit = self.max
        self.probe = 0

    def decrease(self, epoch: int) -> None:
        """An overload signal from a request started in ``epoch``: cut the limit once."""
        if epoch < self.epoch:
            return  # started before the last decrease: same congestion event
        self.epoch += 1
        self._successes = 0
        self.limit = max(self.min, math.floor(self.limit * _DECREASE))

    def on_success(
        self, latency: float | None, completion_tokens: int | None, *, alone: bool = False
    ) -> None:
        """A success: learn its latency against the baseline; grow, or cut on queueing.

        Args:
            latency: seconds the request took (None: no latency signal).
            completion_tokens: its output length (latencies are compared per log2 bucket).
            alone: it was the probe (nothing queued ahead of it).
        """
        if latency is not None and latency > 0:
            self._since_probe += 1
            bucket = max(0, int(completion_tokens or 0)).bit_length()
            base = self.lat_base.get(bucket)
            if alone and base is not None and latency < base:
                base = self.lat_base[bucket] = latency  # the probe: nothing queued ahead
            if base is None:
                self.lat_base[bucket] = latency
            else:
                self._lat_ratio += _SHORT_ALPHA * (latency / base - self._lat_ratio)
                if latency < base:
                    self.lat_base[bucket] = base + _BASE_DOWN * (latency - base)
                else:
                    self.lat_base[bucket] = base + _BASE_UP * min(latency - base, base)
                if self._lat_ratio > _LATENCY_TOLERANCE:
                    self._on_queueing()
                    return
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.max:
            self._successes = 0
            self.limit = min(self.max, self.limit + 1)

    def _on_queueing(self) -> None:
        """Latency says a queue is building: cut once per window of ``limit`` successes."""
        if self._successes < self.limit:
            self._successes += 1
            return
        factor = min(_LATENCY_DECREASE, _LATENCY_TOLERANCE / self._lat_ratio)
        factor = max(_LATENCY_MIN_FACTOR, factor)
        limit = max(self.min, math.floor(self.limit * factor))
        if limit < self.limit and self._since_probe >= _PROBE_INTERVAL:
            self.probe = 1
            self._since_probe = 0
        self.epoch += 1
        self._successes = 0
        self.limit = limit
        self._lat_ratio = _LATENCY_TOLERANCE  # the next samples decide
