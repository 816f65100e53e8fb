"""How a simulated batch moves through time: settings, per-request fates, status at a time.

Both batch APIs of the simulated endpoint (OpenAI's in :mod:`engine.sim.batches`,
Anthropic's in :mod:`engine.sim.message_batches`) use one model. Time is *simulated
seconds* since the batch was created: ``clock() * speed``, with the clock injectable so
tests step it instead of sleeping. Nothing runs in the background; every status is
computed from the clock when asked.

A batch of ``n`` requests is validated for ``validating_s`` (OpenAI only), then processed
for ``processing_s + per_request_s * n``; request ``i`` is done at a point in that span
drawn from (seed, custom_id, how many times that custom_id was submitted before). A
request can be drawn to fail (``fail_fraction``: it is answered with a server error) or
to expire (``expire_fraction``: it is never processed). A batch whose requests are not
all done when its completion window (24 h by default) ends expires then, keeping what was
done. ``force_status`` makes a whole batch expire or fail. Because the draws depend on the
submission count, a request resubmitted after a failure or an expiry draws afresh, as a
retry against the real service would.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from typing import Literal

import msgspec

from engine.clock import Clock

__all__ = (
    "FORCED_STATUSES",
    "BatchSettings",
    "Fate",
    "SimTime",
    "Submissions",
    "Timeline",
    "draw",
    "plan_fates",
)

FORCED_STATUSES = ("expired", "failed")


class BatchSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Behaviour of the simulated batch APIs (``[endpoints.NAME.sim.batches]``).

    Attributes:
        speed: simulated seconds per real second (3600: a simulated hour takes a second).
        validating_s: time an OpenAI batch spends in ``validating``.
        processing_s: time to process a batch, whatever its size.
        per_request_s: further processing time per request.
        finalizing_s: time an OpenAI batch spends in ``finalizing``.
        cancelling_s: time from a cancel request to ``cancelled`` / ``ended``.
        completion_window_s: when an unfinished batch expires (the providers' 24 h).
        fail_fraction: probability that a request is answered with a server error (500).
        expire_fraction: probability that a request is never processed, so its batch
            expires at the end of its window.
        force_status: ``"expired"`` (no request is processed; the batch expires at the end
            of its window) or ``"failed"`` (OpenAI: validation fails; Anthropic, which has
            no failed batches: every request errors). None: normal behaviour.
        max_requests: most requests in one OpenAI batch file (OpenAI: 50,000).
        max_bytes: largest OpenAI batch input file (OpenAI: 200 MB).
        max_file_bytes: largest file ``POST /v1/files`` accepts (OpenAI: 512 MB).
        anthropic_max_requests: most requests in one Message Batch (Anthropic: 100,000).
        anthropic_max_bytes: largest Message Batch create body (Anthropic: 256 MB).
    """

    speed: float = 1.0
    validating_s: float = 0.1
    processing_s: float = 1.0
    per_request_s: float = 0.0
    finalizing_s: float = 0.1
    cancelling_s: float = 0.1
    completion_window_s: float = 86_400.0
    fail_fraction: float = 0.0
    expire_fraction: float = 0.0
    force_status: str | None = None
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    max_file_bytes: int = 512 * 1024 * 1024
    anthropic_max_requests: int = 100_000
    anthropic_max_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError("batches.speed must be a finite number > 0")
        for name in (
            "validating_s",
            "processing_s",
            "per_request_s",
            "finalizing_s",
            "cancelling_s",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"batches.{name} must be >= 0")
        if not self.completion_window_s > 0:
            raise ValueError("batches.completion_window_s must be > 0")
        for name in ("fail_fraction", "expire_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"batches.{name} must be between 0 and 1")
        if self.force_status is not None and self.force_status not in FORCED_STATUSES:
            raise ValueError(
                f"batches.force_status must be one of {', '.join(FORCED_STATUSES)} (or unset)"
            )
        for name in (
            "max_requests",
            "max_bytes",
            "max_file_bytes",
            "anthropic_max_requests",
            "anthropic_max_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"batches.{name} must be >= 1")


def draw(seed: int, api: str, custom_id: str, attempt: int, what: str) -> float:
    """A uniform number in [0, 1) from (seed, api, custom_id, attempt, what)."""
    key = f"{seed}\n{api}\n{attempt}\n{what}\n{custom_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Fate(msgspec.Struct, frozen=True):
    """What happens to one request of a batch.

    Attributes:
        at: simulated seconds after creation when it is done (``inf``: never).
        ok: answered with a success (False: with an error response).
    """

    at: float
    ok: bool


Ending = Literal["done", "expired", "cancelled", "failed"]


class Timeline:
    """The schedule of one batch: when each request is done and how the batch ends.

    Args:
        settings: the batch settings.
        fates: one per request, in input order (``at`` relative to creation).
        start: simulated seconds after creation when processing starts.
        span: processing time.
        failed: validation failed (the batch fails at ``start``; nothing is processed).
    """

    def __init__(
        self,
        settings: BatchSettings,
        fates: list[Fate],
        *,
        start: float,
        span: float,
        failed: bool = False,
    ) -> None:
        self.settings = settings
        self.fates = fates
        self.start = start
        self.span = span
        self.window = settings.completion_window_s
        self.failed = failed
        self.cancel_at: float | None = None
        self._ok = sorted(f.at for f in fates if f.ok and f.at < self.window)
        self._err = sorted(f.at for f in fates if not f.ok and f.at < self.window)
        unfinished = len(self._ok) + len(self._err) < len(fates)
        self.natural_end = self.window if unfinished else min(start + span, self.window)

    @property
    def total(self) -> int:
        """Number of requests."""
        return len(self.fates)

    def cancel(self, now: float) -> None:
        """Record a cancel request at ``now`` (simulated seconds after creation)."""
        if self.cancel_at is None:
            self.cancel_at = now

    def processing_ended_at(self) -> float:
        """When processing stops: the natural end, a cancel, or validation failure."""
        if self.failed:
            return self.start
        if self.cancel_at is not None and self.cancel_at < self.natural_end:
            return self.cancel_at
        return self.natural_end

    def ending(self) -> Ending:
        """How the batch ends (once it has)."""
        if self.failed:
            return "failed"
        if self.cancel_at is not None and self.cancel_at < self.natural_end:
            return "cancelled"
        return "expired" if self.natural_end == self.window and self.unfinished else "done"

    @property
    def unfinished(self) -> bool:
        """Some request will not be done before the window ends."""
        return len(self._ok) + len(self._err) < len(self.fates)

    def counts(self, now: float) -> tuple[int, int]:
        """Requests done by ``now`` (never past the end of processing): (ok, errors)."""
        if self.failed:
            return 0, 0
        until = min(now, self.processing_ended_at())
        # A request due exactly at the cancel instant counts as done.
        return bisect.bisect_right(self._ok, until), bisect.bisect_right(self._err, until)

    def done(self, fate: Fate) -> bool:
        """Whether this request was processed before the end of processing."""
        return not self.failed and fate.at <= self.processing_ended_at() and fate.at < self.window


class Submissions:
    """How many times each custom_id was submitted in a batch, across batches.

    The exactly-once tests read these counts from ``/sim/stats``.
    """

    def __init__(self) -> None:
        self.by_custom_id: dict[str, int] = {}

    def submit(self, custom_id: str) -> int:
        """Count one submission; return how many there were before it (the attempt)."""
        before = self.by_custom_id.get(custom_id, 0)
        self.by_custom_id[custom_id] = before + 1
        return before

    def stats(self) -> dict[str, object]:
        """``submissions_by_custom_id`` and how many ids were submitted more than once."""
        return {
            "submissions_by_custom_id": dict(self.by_custom_id),
            "custom_ids": len(self.by_custom_id),
            "resubmitted_custom_ids": sum(1 for c in self.by_custom_id.values() if c > 1),
        }


def plan_fates(
    settings: BatchSettings,
    seed: int,
    api: str,
    requests: list[tuple[str, int, bool]],
    *,
    start: float,
    span: float,
    fail_all: bool = False,
) -> list[Fate]:
    """The fate of each request: ``requests`` are (custom_id, attempt, valid).

    An invalid request (refused by the endpoint's checks) is processed like any other and
    answered with its error; a valid one may be drawn to fail or to expire. ``fail_all``
    makes every request fail.
    """
    forced_expiry = settings.force_status == "expired"
    fates: list[Fate] = []
    for custom_id, attempt, valid in requests:
        at = start + span * (1.0 - draw(seed, api, custom_id, attempt, "at"))
        if (
            forced_expiry
            or draw(seed, api, custom_id, attempt, "expire") < settings.expire_fraction
        ):
            fates.append(Fate(math.inf, True))
            continue
        ok = (
            valid
            and not fail_all
            and draw(seed, api, custom_id, attempt, "fail") >= settings.fail_fraction
        )
        fates.append(Fate(at, ok))
    return fates


class SimTime:
    """Simulated unix time: starts at the real time, runs ``speed`` times as fast as ``clock``.

    Args:
        clock: monotonic seconds (tests pass a :class:`engine.clock.FakeClock`).
        speed: simulated seconds per clock second.
        epoch: simulated unix time at creation (default: the real time now).
    """

    def __init__(self, clock: Clock, speed: float, epoch: float | None = None) -> None:
        self._clock = clock
        self._speed = speed
        self._t0 = clock()
        self._epoch = time.time() if epoch is None else epoch

    def now(self) -> float:
        """Simulated unix seconds."""
        return self._epoch + (self._clock() - self._t0) * self._speed
