"""A run's live figures in ``OUT/status.json``, rewritten about once a second.

The viewer (``synth-engine view OUT``) may run in another process than the run, so the
run publishes what it knows and the viewer reads the file: counts, per-stage calls, per
endpoint in flight, and a bounded time series of cumulative counters from which rates
are drawn (requests/s, tokens/s, 429s, cost). Nothing here owns state: it reads
:class:`~engine.metrics.core.Metrics` like the progress display does.

The file is replaced atomically (written beside, then renamed), so a reader never sees
half of it. It is not fsynced: it is a display, rewritten a second later, and a power
loss costs at most its last samples. The series holds at most ``max_points`` samples:
when full, every other sample is dropped and sampling slows to half the rate, so any
run length fits in a few tens of kilobytes while its start stays visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from .core import Metrics
from .report import Priced

__all__ = ("SERIES_COLUMNS", "STATUS_FORMAT", "STATUS_NAME", "StatusWriter")

log = logging.getLogger("engine.metrics")

STATUS_NAME = "status.json"
STATUS_FORMAT = 1
SERIES_COLUMNS: tuple[str, ...] = (
    "t_s",
    "items_done",
    "kept",
    "rejected",
    "failed",
    "requests",
    "tokens",
    "http_429",
    "cost_usd",
)
"""The columns of ``series.points``: seconds since the run started, then cumulative
counters of this invocation (``cost_usd`` is None when no endpoint in use has a price)."""


class StatusWriter:
    """Writes ``OUT/status.json`` from a run's metrics, once per ``interval_s``.

    Args:
        out_dir: the output directory (must exist).
        metrics: the run's metrics (read only).
        rows: rows per kind in the output, earlier runs and uncommitted rows included
            (``ShardSink.rows_written`` fits); None: this invocation's rows only.
        prices: endpoint name -> price, for the cost; endpoints without one are unpriced.
        interval_s: seconds between writes in :meth:`run`.
        max_points: most samples kept in the time series (at least 16).
        wall: wall-clock seconds since the epoch, written so a reader can tell a live
            run from one that ended without saying so (killed).
    """

    def __init__(
        self,
        out_dir: Path,
        metrics: Metrics,
        *,
        rows: Callable[[], Mapping[str, int]] | None = None,
        prices: Mapping[str, Priced] | None = None,
        interval_s: float = 1.0,
        max_points: int = 600,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(out_dir) / STATUS_NAME
        self._tmp = self.path.with_name(STATUS_NAME + ".tmp")
        self.metrics = metrics
        self._rows = rows
        self.prices: dict[str, Priced] = dict(prices or {})
        self.interval_s = interval_s
        self.max_points = max(16, max_points)
        self._wall = wall
        self._points: list[list[float | None]] = []
        self._every = 1  # sample every n-th tick
        self._ticks = 0
        self._failed = False

    def _cost(self) -> tuple[float | None, dict[str, float | None]]:
        """Total USD so far (None if an endpoint that sent requests has no price), per endpoint."""
        per: dict[str, float | None] = {}
        total = 0.0
        unknown = False
        for name, e in self.metrics.endpoints.items():
            price = self.prices.get(name)
            if price is None:
                per[name] = None
                unknown = unknown or e.requests > 0
                continue
            per[name] = cost = price.cost(e.prompt_tokens, e.completion_tokens)
            total += cost
        return (None if unknown or not self.prices else total), per

    def status(self, state: str = "running") -> dict[str, Any]:
        """The document written to ``status.json`` (and one more series sample).

        Args:
            state: ``running``, or ``ended`` for the last write of a run.
        """
        m = self.metrics
        cost, per_cost = self._cost()
        this_run = dict(m.rows)
        rows = dict(self._rows()) if self._rows is not None else this_run
        requests = sum(e.requests for e in m.endpoints.values())
        tokens = sum(e.prompt_tokens + e.completion_tokens for e in m.endpoints.values())
        limited = sum(e.http_429 for e in m.endpoints.values())
        elapsed = m.elapsed()
        self._sample(
            [
                round(elapsed, 3),
                m.items_done,
                this_run.get("kept", 0),
                this_run.get("rejected", 0),
                this_run.get("failed", 0),
                requests,
                tokens,
                limited,
                None if cost is None else round(cost, 6),
            ],
            force=state != "running",
        )
        endpoints = {}
        for name, e in m.endpoints.items():
            rpm, tpm = e.rates()
            endpoints[name] = {
                "in_flight": e.in_flight,
                "max_in_flight": e.max_in_flight,
                "concurrency_limit": e.concurrency_limit,
                "rpm_limit": e.rpm_limit,
                "tpm_limit": e.tpm_limit,
                "requests": e.requests,
                "ok": e.ok,
                "errors": dict(e.errors),
                "http_429": e.http_429,
                "retries": e.retries,
                "cache_hits": e.cache_hits,
                "prompt_tokens": e.prompt_tokens,
                "completion_tokens": e.completion_tokens,
                "rpm": round(rpm, 1),
                "tpm": round(tpm, 1),
                "latency_p50_ms": round(e.latency.percentile(50) * 1000.0, 1),
                "cost_usd": per_cost.get(name),
            }
        return {
            "format": STATUS_FORMAT,
            "state": state,
            "pid": os.getpid(),
            "updated_at": self._wall(),
            "interval_s": self.interval_s,
            "elapsed_s": round(elapsed, 3),
            "items": {
                "total": m.items_total,
                "started": m.items_started,
                "done": m.items_done,
                "skipped": m.items_skipped,
            },
            "rows": rows,
            "rows_this_run": this_run,
            "cost_usd": cost,
            "endpoints": endpoints,
            "stages": {
                name: {
                    "calls": s.calls,
                    "ok": s.ok,
                    "failed": s.failed,
                    "parse_errors": s.parse_errors,
                }
                for name, s in m.stages.items()
            },
            "series": {"columns": list(SERIES_COLUMNS), "points": list(self._points)},
        }

    def _sample(self, point: list[float | None], *, force: bool) -> None:
        self._ticks += 1
        if not force and (self._ticks - 1) % self._every:
            return
        self._points.append(point)
        if len(self._points) > self.max_points:
            # Halve the resolution: keep the first and every other sample after it.
            self._points = self._points[::2]
            self._every *= 2

    def write(self, state: str = "running") -> bool:
        """Write ``status.json`` atomically; False (logged once, at info) if that failed.

        A failure never stops the run: the status file is a display, not the output.
        """
        try:
            data = orjson.dumps(self.status(state))
            with open(self._tmp, "wb") as f:
                f.write(data)
            os.replace(self._tmp, self.path)
        except (OSError, TypeError) as exc:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
            if not self._failed:
                # Info, not a warning: a full disk or a read-only output is reported once,
                # clearly, by the shard writer; this file is only a display.
                log.info("cannot write %s (%s); the live view will not update", self.path, exc)
            self._failed = True
            return False
        return True

    async def run(self) -> None:
        """Write every ``interval_s`` until cancelled, then once more with state ``ended``."""
        try:
            while True:
                self.write()
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                self.write("ended")
