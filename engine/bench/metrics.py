"""Per-request records and the figures made from them.

Every request leaves a :class:`Record` of clock readings (seconds, one monotonic clock):

* ``intended``: when the load model meant it to go (the schedule's time in an open loop;
  in a closed loop, the moment its worker was free);
* ``sent``: when its first attempt passed the gate and went to the client;
* ``first_token`` / ``last_token``: arrival of the first and the last read that carried
  content (streamed requests);
* ``end``: when the whole reply (or the final error) was in.

From them: **schedule lag** ``sent - intended`` (time spent waiting for the client: the
concurrency cap, rpm/tpm pacing, a late timer, a CPU-bound loop); **latency** and **TTFT**
both from ``sent`` (what the server took) and from ``intended`` (what a user arriving on
schedule saw: free of coordinated omission); **TPOT** ``(last_token - first_token) /
(output_tokens - 1)``; **ITL**, each content read's gap since the previous one spread
evenly over the tokens it carried (per-read token counts from the tokenizer when one is
given, else the request's tokens after the first spread evenly over its reads), pooled
over all tokens; **inter-chunk** gaps as read from the network, unweighted.

Percentiles are linear interpolations between order statistics (numpy's default); the
pooled ITL uses the weighted inverse CDF. Figures cover the *measurement window*: the
requests intended after the warm-up and before the cool-down.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

import msgspec

__all__ = (
    "SLO_METRICS",
    "Record",
    "SloCheck",
    "SloVerdict",
    "in_window",
    "itl_samples",
    "meets_slos",
    "percentiles",
    "slo_value",
    "summarize",
    "weighted_percentiles",
)

QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)

SLO_METRICS: tuple[str, ...] = ("ttft_ms", "tpot_ms", "itl_ms", "latency_ms")
"""SLO names: TTFT and latency from the intended time, TPOT, ITL (all in milliseconds)."""


class Record(msgspec.Struct, kw_only=True):
    """What happened to one request (times in seconds on the run's clock)."""

    index: int
    conversation: int = 0
    turn: int = 0
    intended: float = 0.0
    sent: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    end: float | None = None
    ok: bool = False
    attempts: int = 0
    http_429: int = 0
    error: str | None = None
    status: int | None = None
    message: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    tokens_source: str = "usage"
    finish_reason: str | None = None
    chunks: list[float] = msgspec.field(default_factory=list)
    chunk_tokens: list[int] | None = None

    @property
    def lag(self) -> float | None:
        """Schedule lag: sent - intended."""
        return None if self.sent is None else self.sent - self.intended

    @property
    def latency(self) -> float | None:
        """From the first send to the end of the reply (ok requests)."""
        return (
            self.end - self.sent
            if self.ok and self.end is not None and self.sent is not None
            else None
        )

    @property
    def latency_intended(self) -> float | None:
        """From the intended time to the end of the reply (ok requests)."""
        return self.end - self.intended if self.ok and self.end is not None else None

    @property
    def ttft(self) -> float | None:
        """From the send to the first content (ok streamed requests)."""
        if not self.ok or self.first_token is None or self.sent is None:
            return None
        return self.first_token - self.sent

    @property
    def ttft_intended(self) -> float | None:
        """From the intended time to the first content."""
        return None if not self.ok or self.first_token is None else self.first_token - self.intended

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first."""
        if not self.ok or self.first_token is None or self.last_token is None:
            return None
        if self.output_tokens < 2:
            return None
        return (self.last_token - self.first_token) / (self.output_tokens - 1)

    def gaps(self) -> list[float]:
        """Gaps between successive content reads."""
        c = self.chunks
        return [c[i] - c[i - 1] for i in range(1, len(c))]


def itl_samples(rec: Record) -> list[tuple[float, float]]:
    """``(per-token gap, tokens)`` for each content read after the first."""
    gaps = rec.gaps()
    if not gaps or not rec.ok:
        return []
    ct = rec.chunk_tokens
    if ct is not None and len(ct) == len(rec.chunks):
        return [(g / k, float(k)) for g, k in zip(gaps, ct[1:], strict=True) if k > 0]
    tokens_after_first = rec.output_tokens - 1
    if tokens_after_first < 1:
        return []
    per = tokens_after_first / len(gaps)
    return [(g / per, per) for g in gaps]


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50/p90/p95/p99/p99.9, mean, stddev, min, max (times ``scale``), and count."""
    n = len(values)
    out: dict[str, float | None] = {}
    if n == 0:
        out = dict.fromkeys([q for q, _ in QUANTILES] + ["mean", "stddev", "min", "max"])
        out["count"] = 0
        return out
    s = sorted(values)
    for name, q in QUANTILES:
        pos = q / 100.0 * (n - 1)
        lo = math.floor(pos)
        hi = min(n - 1, lo + 1)
        v = s[lo] + (s[hi] - s[lo]) * (pos - lo)
        out[name] = _r(v * scale)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / n
    out.update(
        mean=_r(mean * scale),
        stddev=_r(math.sqrt(var) * scale),
        min=_r(s[0] * scale),
        max=_r(s[-1] * scale),
        count=n,
    )
    return out


def weighted_percentiles(
    samples: Sequence[tuple[float, float]], scale: float = 1000.0
) -> dict[str, float | None]:
    """Like :func:`percentiles` over ``(value, weight)`` pairs (weighted inverse CDF)."""
    if not samples:
        return percentiles([], scale)
    s = sorted(samples)
    cum: list[float] = []
    total = 0.0
    for _, w in s:
        total += w
        cum.append(total)
    out: dict[str, float | None] = {}
    for name, q in QUANTILES:
        k = min(len(s) - 1, bisect.bisect_left(cum, q / 100.0 * total))
        out[name] = _r(s[k][0] * scale)
    mean = sum(v * w for v, w in s) / total
    var = sum(w * (v - mean) ** 2 for v, w in s) / total
    out.update(
        mean=_r(mean * scale),
        stddev=_r(math.sqrt(var) * scale),
        min=_r(s[0][0] * scale),
        max=_r(s[-1][0] * scale),
        count=round(total),
    )
    return out


def _r(x: float) -> float:
    return round(x, 3)


def in_window(
    records: Sequence[Record], start: float, warmup_s: float, cooldown_s: float
) -> list[Record]:
    """The records intended within ``[start + warmup, last intended - cooldown]``."""
    if not records:
        return []
    last = max(r.intended for r in records)
    lo, hi = start + warmup_s, last - cooldown_s
    return [r for r in records if lo <= r.intended <= hi]


def slo_value(rec: Record, name: str) -> float | None:
    """A request's figure for an SLO (seconds); None if it has none (e.g. not streamed)."""
    if name == "ttft_ms":
        return rec.ttft_intended
    if name == "latency_ms":
        return rec.latency_intended
    if name == "tpot_ms":
        return rec.tpot
    if name == "itl_ms":  # the worst per-token gap this request's reader saw
        s = itl_samples(rec)
        return max(v for v, _ in s) if s else (0.0 if rec.ok else None)
    raise KeyError(name)


def meets_slos(rec: Record, slos: dict[str, float]) -> bool:
    """True when the request succeeded and every SLO (milliseconds) holds for it."""
    if not rec.ok:
        return False
    for name, limit in slos.items():
        v = slo_value(rec, name)
        if v is None or v * 1000.0 > limit:
            return False
    return True


def _rate(times: Iterable[float]) -> float | None:
    t = sorted(times)
    if len(t) < 2 or t[-1] <= t[0]:
        return None
    return (len(t) - 1) / (t[-1] - t[0])


def summarize(
    records: Sequence[Record],
    *,
    start: float,
    warmup_s: float = 0.0,
    cooldown_s: float = 0.0,
    slos: dict[str, float] | None = None,
    slo_percentile: float = 99.0,
) -> dict[str, Any]:
    """The figures of one run over its measurement window (see the module docstring).

    Returns:
        A JSON-ready dict: counts, rates (sent, completed, goodput, output tokens),
        percentile blocks in ms, and the SLO verdict when ``slos`` are given.
    """
    win = in_window(records, start, warmup_s, cooldown_s)
    ok = [r for r in win if r.ok]
    sent = [r.sent for r in win if r.sent is not None]
    ends = [r.end for r in ok if r.end is not None]
    completed = _rate(ends)
    span = (max(ends) - min(ends)) if len(ends) > 1 else 0.0
    out_tokens = sum(r.output_tokens for r in ok)
    itl: list[tuple[float, float]] = []
    for r in ok:
        itl.extend(itl_samples(r))
    gaps = [g for r in ok for g in r.gaps()]

    def values(attr: str) -> list[float]:
        return [v for r in win if (v := getattr(r, attr)) is not None]

    out: dict[str, Any] = {
        "window": {
            "requests": len(win),
            "ok": len(ok),
            "failed": len(win) - len(ok),
            "warmup_s": warmup_s,
            "cooldown_s": cooldown_s,
            "excluded": len(records) - len(win),
        },
        "send_rate_per_s": _r2(_rate(sent)),
        "completed_per_s": _r2(completed),
        "output_tokens_per_s": _r2(out_tokens / span if span > 0 else None),
        "schedule_lag_ms": percentiles(values("lag")),
        "latency_ms": percentiles(values("latency")),
        "latency_from_intended_ms": percentiles(values("latency_intended")),
        "ttft_ms": percentiles(values("ttft")),
        "ttft_from_intended_ms": percentiles(values("ttft_intended")),
        "tpot_ms": percentiles(values("tpot")),
        "itl_ms": weighted_percentiles(itl),
        "inter_chunk_ms": percentiles(gaps),
        "output_tokens": percentiles([float(r.output_tokens) for r in ok], scale=1.0),
        "prompt_tokens": percentiles([float(r.prompt_tokens) for r in ok], scale=1.0),
    }
    if slos:
        good = sum(1 for r in win if meets_slos(r, slos))
        out["slo"] = evaluate_slos(win, slos, slo_percentile, itl)
        out["slo"]["good_requests"] = good
        out["goodput_per_s"] = _r2(completed * good / len(win) if completed and win else 0.0)
    return out


class SloCheck(TypedDict):
    """One SLO over the window: its limit, the percentile's value (None: no value or
    infinite) and whether it is met."""

    limit: float
    value: float | None
    met: bool


class SloVerdict(TypedDict):
    """Every SLO's check at one percentile, and whether all are met."""

    percentile: float
    checks: dict[str, SloCheck]
    met: bool


def evaluate_slos(
    win: Sequence[Record],
    slos: dict[str, float],
    percentile: float,
    itl: Sequence[tuple[float, float]] | None = None,
) -> SloVerdict:
    """Whether each SLO's ``percentile`` over the window is within its limit.

    A failed request counts as an infinite value, so a run whose failures exceed
    ``100 - percentile`` percent fails every SLO.
    """
    failed = sum(1 for r in win if not r.ok)
    checks: dict[str, SloCheck] = {}
    for name, limit in slos.items():
        if name == "itl_ms":
            samples = [*(itl or ()), *[(math.inf, 1.0)] * failed]
            value = _quantile_weighted(samples, percentile) if samples else None
        else:
            vals = [slo_value(r, name) for r in win if r.ok]
            vals_f = [v * 1000.0 for v in vals if v is not None] + [math.inf] * failed
            value = _quantile(vals_f, percentile) if vals_f else None
        checks[name] = {
            "limit": limit,
            "value": None if value is None or math.isinf(value) else _r(value),
            "met": value is not None and value <= limit,
        }
    return {
        "percentile": percentile,
        "checks": checks,
        "met": bool(win) and all(c["met"] for c in checks.values()),
    }


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q / 100.0 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(len(s) - 1, lo + 1)
    if math.isinf(s[hi]):
        return s[hi] if pos > lo else s[lo]
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _quantile_weighted(samples: list[tuple[float, float]], q: float) -> float:
    s = sorted(samples)
    total = sum(w for _, w in s)
    acc = 0.0
    for v, w in s:
        acc += w
        if acc >= q / 100.0 * total:
            return v * 1000.0
    return s[-1][0] * 1000.0


def _r2(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
