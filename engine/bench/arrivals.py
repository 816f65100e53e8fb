"""Arrival schedules: when each request of an open-loop run is meant to be sent.

An open-loop run sends on a schedule computed before the first request, whatever the
server does, so a slow server cannot slow the load down (closed loops can: each worker
waits for its reply, which is how "coordinated omission" hides queueing). Offsets are
seconds from the start of the run, non-decreasing, the first at 0.

* ``constant``: one request every ``1/rate`` seconds.
* ``poisson``: exponential gaps (a Poisson process), the model of many independent users.
* ``gamma``: gamma-distributed gaps with shape ``burstiness`` and mean ``1/rate``;
  burstiness 1 is Poisson, below 1 burstier, above 1 more regular (vLLM's convention).
* ``trace``: the timestamps of a recorded trace, scaled by a speed-up factor.

Random gaps are drawn and then scaled so that their mean is exactly ``1/rate``: a run of
N requests then offers the rate asked for, instead of one off by about ``1/sqrt(N)`` (at
1,000 requests a Poisson draw's realised rate is within 1% of its parameter only about
one time in four). The gaps keep their distribution's shape; only the unit changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..errors import ConfigError

__all__ = ("ARRIVALS", "arrival_offsets", "trace_offsets")

ARRIVALS: tuple[str, ...] = ("closed", "constant", "poisson", "gamma", "trace")


def arrival_offsets(
    kind: str, rate: float, count: int, *, seed: int = 0, burstiness: float = 1.0
) -> list[float]:
    """Send offsets (seconds from the start) of ``count`` requests at ``rate`` per second.

    Args:
        kind: ``"constant"``, ``"poisson"`` or ``"gamma"``.
        rate: target requests per second (> 0).
        count: number of arrivals (>= 1).
        seed: seed of the gaps' random draw (``poisson``, ``gamma``).
        burstiness: the gamma shape (``gamma`` only; 1.0 is Poisson).

    Raises:
        ConfigError: an unknown kind or a non-positive rate, count or burstiness.
    """
    if rate <= 0:
        raise ConfigError("the rate must be > 0 requests/s", path="bench", field="--rate")
    if count < 1:
        return []
    if burstiness <= 0:
        raise ConfigError("burstiness must be > 0", path="bench", field="--burstiness")
    step = 1.0 / rate
    if kind == "constant" or count == 1:
        return [i * step for i in range(count)]
    rng = random.Random(seed)
    if kind == "poisson":
        gaps = [rng.expovariate(1.0) for _ in range(count - 1)]
    elif kind == "gamma":
        gaps = [rng.gammavariate(burstiness, 1.0 / burstiness) for _ in range(count - 1)]
    else:
        raise ConfigError(
            f"unknown arrival process {kind!r}",
            path="bench",
            field="--load",
            hint="use " + ", ".join(ARRIVALS),
        )
    scale = step * len(gaps) / (sum(gaps) or 1.0)
    offsets = [0.0]
    t = 0.0
    for g in gaps:
        t += g * scale
        offsets.append(t)
    return offsets


def trace_offsets(timestamps: Sequence[float], speed: float = 1.0) -> list[float]:
    """A trace's timestamps (seconds, any origin) as offsets from its first, sped up ``speed``x.

    Raises:
        ConfigError: ``speed`` is not positive.
    """
    if speed <= 0:
        raise ConfigError("the trace speed must be > 0", path="bench", field="--trace-speed")
    if not timestamps:
        return []
    t0 = min(timestamps)
    return sorted((t - t0) / speed for t in timestamps)
