"""The run report: ``OUT/report.json`` and the one-screen text summary.

:func:`build_report` freezes a :class:`~engine.metrics.core.Metrics` into a
:class:`Report`; :func:`write_report` writes it atomically; :func:`render_summary`
turns it into plain aligned text for the CLI to print.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import msgspec

from .core import EndpointStats, Histogram, Metrics, StageStats

__all__ = (
    "EndpointReport",
    "ItemsReport",
    "LatencyReport",
    "Priced",
    "Report",
    "RowsReport",
    "StageReport",
    "build_report",
    "render_summary",
    "write_report",
)

_MAX_TABLE_ROWS = 12  # per table, so the summary stays within 40 lines


class Priced(Protocol):
    """An endpoint's price (``engine.config.Price`` fits)."""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for the given token counts."""
        ...


class LatencyReport(msgspec.Struct, kw_only=True):
    """A latency distribution, in milliseconds.

    Attributes:
        p50: median.
        p90: 90th percentile.
        p95: 95th percentile.
        p99: 99th percentile.
        max: largest value.
        mean: mean value.
        count: number of values.
    """

    p50: float = 0.0
    p90: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0
    count: int = 0


class EndpointReport(msgspec.Struct, kw_only=True):
    """One endpoint's totals (see :class:`~engine.metrics.core.EndpointStats`).

    Attributes:
        requests: HTTP attempts sent (retries included, cache hits excluded).
        ok: attempts that returned a response.
        errors: failed attempts by error kind.
        cancelled: attempts abandoned by cancellation.
        http_429: attempts answered with HTTP 429.
        retries: retries after failed attempts.
        cache_hits: calls answered from the response cache.
        prompt_tokens: prompt tokens paid for in this run.
        completion_tokens: completion tokens paid for in this run.
        cached_prompt_tokens: prompt tokens of replayed cache hits (free).
        cached_completion_tokens: completion tokens of replayed cache hits (free).
        cost_usd: USD paid for this run's tokens at the endpoint's configured price;
            None when the endpoint has no price.
        latency_ms: latency of successful attempts.
        ttft_ms: time to first token of streamed attempts.
        mean_in_flight: time-weighted mean of attempts in flight while in use.
        max_in_flight: most attempts in flight at once.
        concurrency_limit: the gate's concurrency limit at the end.
        rpm_limit: the requests-per-minute limit at the end (configured or learned).
        tpm_limit: the tokens-per-minute limit at the end (configured or learned).
        requests_per_s: ``requests`` over the run's wall time.
    """

    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    cancelled: int = 0
    http_429: int = 0
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: LatencyReport = msgspec.field(default_factory=LatencyReport)
    ttft_ms: LatencyReport = msgspec.field(default_factory=LatencyReport)
    mean_in_flight: float = 0.0
    max_in_flight: int = 0
    concurrency_limit: float | None = None
    rpm_limit: float | None = None
    tpm_limit: float | None = None
    requests_per_s: float = 0.0


class StageReport(msgspec.Struct, kw_only=True):
    """One pipeline stage's totals (see :class:`~engine.metrics.core.StageStats`).

    Attributes:
        calls: model calls made (parse retries included).
        ok: calls whose reply parsed.
        failed: calls that failed.
        parse_errors: replies that did not parse.
        latency_ms: call latency (when the stage recorded it).
        prompt_tokens: prompt tokens (when the stage recorded them).
        completion_tokens: completion tokens (when the stage recorded them).
    """

    calls: int = 0
    ok: int = 0
    failed: int = 0
    parse_errors: int = 0
    latency_ms: LatencyReport = msgspec.field(default_factory=LatencyReport)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ItemsReport(msgspec.Struct, kw_only=True):
    """Input items.

    Attributes:
        total: number of input items, when known.
        done: items finished in this run.
        skipped: items skipped because an earlier run finished them.
    """

    total: int | None = None
    done: int = 0
    skipped: int = 0


class RowsReport(msgspec.Struct, kw_only=True):
    """Rows written in this run, by kind.

    Attributes:
        kept: rows kept.
        rejected: rows rejected by a filter.
        failed: rows recording a failure.
    """

    kept: int = 0
    rejected: int = 0
    failed: int = 0


class Report(msgspec.Struct, kw_only=True):
    """A run's report, written to ``OUT/report.json``.

    Attributes:
        simulated: the run used a simulated endpoint (its rows are not real data).
        method: the generation method's name.
        wall_s: wall time of the run in seconds.
        items: input items.
        rows: rows written by kind.
        endpoints: endpoint name -> totals.
        stages: stage name -> totals.
        tokens_per_kept_row: tokens paid for (all endpoints) per kept row; None
            when no row was kept.
        cost_usd: USD paid in this run (all endpoints); None when an endpoint that
            sent requests has no price (see ``unpriced``).
        cost_per_kept_row_usd: ``cost_usd`` per kept row; None when either is unknown.
        unpriced: endpoints that sent requests but have no price.
        method_report: free-form figures from the method.
        stop_reason: why the run stopped early; None when it completed.
    """

    simulated: bool
    method: str
    wall_s: float
    items: ItemsReport = msgspec.field(default_factory=ItemsReport)
    rows: RowsReport = msgspec.field(default_factory=RowsReport)
    endpoints: dict[str, EndpointReport] = msgspec.field(default_factory=dict)
    stages: dict[str, StageReport] = msgspec.field(default_factory=dict)
    tokens_per_kept_row: float | None = None
    cost_usd: float | None = None
    cost_per_kept_row_usd: float | None = None
    unpriced: list[str] = msgspec.field(default_factory=list)
    method_report: dict[str, object] = msgspec.field(default_factory=dict)
    stop_reason: str | None = None


# ------------------------------------------------------------------- building
def _latency(hist: Histogram) -> LatencyReport:
    return LatencyReport(
        p50=hist.percentile(50) * 1000.0,
        p90=hist.percentile(90) * 1000.0,
        p95=hist.percentile(95) * 1000.0,
        p99=hist.percentile(99) * 1000.0,
        max=hist.max * 1000.0,
        mean=hist.mean * 1000.0,
        count=hist.count,
    )


def _endpoint(stats: EndpointStats, wall_s: float, price: Priced | None) -> EndpointReport:
    cost = None if price is None else price.cost(stats.prompt_tokens, stats.completion_tokens)
    return EndpointReport(
        requests=stats.requests,
        ok=stats.ok,
        errors=dict(stats.errors),
        cancelled=stats.cancelled,
        http_429=stats.http_429,
        retries=stats.retries,
        cache_hits=stats.cache_hits,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        cached_prompt_tokens=stats.cached_prompt_tokens,
        cached_completion_tokens=stats.cached_completion_tokens,
        cost_usd=cost,
        latency_ms=_latency(stats.latency),
        ttft_ms=_latency(stats.ttft),
        mean_in_flight=stats.mean_in_flight,
        max_in_flight=stats.max_in_flight,
        concurrency_limit=stats.concurrency_limit,
        rpm_limit=stats.rpm_limit,
        tpm_limit=stats.tpm_limit,
        requests_per_s=stats.requests / wall_s if wall_s > 0 else 0.0,
    )


def _stage(stats: StageStats) -> StageReport:
    return StageReport(
        calls=stats.calls,
        ok=stats.ok,
        failed=stats.failed,
        parse_errors=stats.parse_errors,
        latency_ms=_latency(stats.latency),
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
    )


def build_report(
    metrics: Metrics,
    *,
    method: str,
    simulated: bool,
    stop_reason: str | None,
    method_report: dict[str, object] | None = None,
    prices: Mapping[str, Priced] | None = None,
) -> Report:
    """Freeze ``metrics`` into a :class:`Report`.

    Args:
        metrics: the run's metrics.
        method: the generation method's name.
        simulated: whether any endpoint was simulated.
        stop_reason: why the run stopped early (None when complete).
        method_report: free-form figures from the method.
        prices: endpoint name -> price (``engine.config.Price`` fits), for the cost
            figures; an endpoint left out is unpriced. Replayed cache hits cost nothing.
    """
    wall_s = max(0.0, metrics.elapsed())
    rows = metrics.rows
    kept = rows.get("kept", 0)
    prices = prices or {}
    endpoints = {
        name: _endpoint(s, wall_s, prices.get(name)) for name, s in metrics.endpoints.items()
    }
    tokens = sum(e.prompt_tokens + e.completion_tokens for e in endpoints.values())
    unpriced = sorted(n for n, e in endpoints.items() if e.cost_usd is None and e.requests > 0)
    cost = None if unpriced else sum(e.cost_usd or 0.0 for e in endpoints.values())
    return Report(
        simulated=simulated,
        method=method,
        wall_s=wall_s,
        items=ItemsReport(
            total=metrics.items_total, done=metrics.items_done, skipped=metrics.items_skipped
        ),
        rows=RowsReport(kept=kept, rejected=rows.get("rejected", 0), failed=rows.get("failed", 0)),
        endpoints=endpoints,
        stages={name: _stage(s) for name, s in metrics.stages.items()},
        tokens_per_kept_row=tokens / kept if kept else None,
        cost_usd=cost,
        cost_per_kept_row_usd=cost / kept if cost is not None and kept else None,
        unpriced=unpriced,
        method_report=dict(method_report or {}),
        stop_reason=stop_reason,
    )


# -------------------------------------------------------------------- writing
def _enc_hook(obj: object) -> object:
    """Encode what msgspec cannot (in ``method_report``) as its string form."""
    return str(obj)


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def write_report(
    path: str | os.PathLike[str],
    report: Report,
    *,
    redact: Callable[[bytes], bytes] | None = None,
) -> None:
    """Write ``report`` as indented JSON to ``path`` atomically (temporary file + rename).

    Args:
        path: the report file.
        report: the report.
        redact: applied to the encoded report (the run's secrets out of it).

    Raises:
        OSError: the file cannot be written.
    """
    target = Path(path)
    data = msgspec.json.format(_ENCODER.encode(report), indent=2) + b"\n"
    if redact is not None:
        data = redact(data)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# ------------------------------------------------------------------ rendering
def _num(n: float) -> str:
    """A compact count: 950, 12.3k, 4.56M."""
    if abs(n) >= 1e9:
        return f"{n / 1e9:.2f}G"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.2f}M"
    if abs(n) >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def _usd(v: float) -> str:
    """Dollars: $1,234, $12.35, $0.0123."""
    if v >= 1000:
        return f"${v:,.0f}"
    return f"${v:.2f}" if v >= 1 else f"${v:.4f}"


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned lines: first column left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _capped(rows: list[list[str]], what: str) -> tuple[list[list[str]], str | None]:
    if len(rows) <= _MAX_TABLE_ROWS:
        return rows, None
    keep = _MAX_TABLE_ROWS - 1
    return rows[:keep], f"  ... and {len(rows) - keep} more {what}"


def _cost_line(report: Report) -> str | None:
    """The cost line: total and per kept row, or a lower bound naming unpriced endpoints."""
    if report.cost_usd is not None:
        if not any(e.cost_usd is not None for e in report.endpoints.values()):
            return None  # nothing priced and nothing sent: no cost to speak of
        line = f"cost        {_usd(report.cost_usd)}"
        if report.cost_per_kept_row_usd is not None:
            line += f"   ({_usd(report.cost_per_kept_row_usd)} per kept row)"
        return line
    priced = [e.cost_usd for e in report.endpoints.values() if e.cost_usd is not None]
    if not priced:
        return None
    return f"cost        at least {_usd(sum(priced))} (no price for {', '.join(report.unpriced)})"


def render_summary(report: Report) -> str:
    """A one-screen (at most 40 lines) plain-text summary of ``report``, without markup."""
    title = f"synth-engine run: {report.method}"
    if report.simulated:
        title += "  ** SIMULATED ENDPOINT: replies are fake, not real model output **"
    lines = [title]
    r = report.rows
    lines.append(f"rows        kept {r.kept}   rejected {r.rejected}   failed {r.failed}")
    it = report.items
    total = "?" if it.total is None else str(it.total)
    items = f"items       {it.done + it.skipped}/{total} done"
    if it.skipped:
        items += f" ({it.skipped} resumed from an earlier run)"
    lines.append(items)
    rate = it.done / report.wall_s if report.wall_s > 0 else 0.0
    lines.append(f"wall time   {_duration(report.wall_s)}   ({rate:.2f} items/s)")
    tpk = "-" if report.tokens_per_kept_row is None else f"{report.tokens_per_kept_row:.1f}"
    cached = sum(
        e.cached_prompt_tokens + e.cached_completion_tokens for e in report.endpoints.values()
    )
    tokens_line = f"tokens/kept {tpk}"
    if cached:
        tokens_line += f"   (+{_num(cached)} tokens replayed from the cache, free)"
    lines.append(tokens_line)
    cost_line = _cost_line(report)
    if cost_line:
        lines.append(cost_line)
    lines.append(f"stopped     {report.stop_reason or 'no (complete)'}")
    if r.kept == 0 and (r.failed or r.rejected):
        why = (
            f"every item failed ({r.failed} failed rows; each says its stage and error)"
            if not r.rejected
            else f"{r.rejected} rejected by the filters, {r.failed} failed"
        )
        lines.append(f"NOTHING KEPT {why}")

    if report.endpoints:
        lines.append("")
        priced = any(e.cost_usd is not None for e in report.endpoints.values())
        ep_rows = [
            [
                name,
                str(e.requests),
                str(sum(e.errors.values())),
                str(e.http_429),
                str(e.retries),
                str(e.cache_hits),
                _ms(e.latency_ms.p50),
                _ms(e.latency_ms.p99),
                f"{e.mean_in_flight:.1f}/{e.max_in_flight}",
                f"{_num(e.prompt_tokens)}/{_num(e.completion_tokens)}",
                *([] if not priced else ["-" if e.cost_usd is None else _usd(e.cost_usd)]),
            ]
            for name, e in report.endpoints.items()
        ]
        ep_rows, more = _capped(ep_rows, "endpoints")
        headers = [
            "endpoint",
            "req",
            "err",
            "429",
            "retry",
            "cache",
            "p50ms",
            "p99ms",
            "in-flight",
            "tok in/out",
        ]
        lines.extend(_table([*headers, *(["cost"] if priced else [])], ep_rows))
        if more:
            lines.append(more)

    if report.stages:
        lines.append("")
        st_rows = [
            [name, str(s.calls), str(s.ok), str(s.failed), str(s.parse_errors)]
            for name, s in report.stages.items()
        ]
        st_rows, more = _capped(st_rows, "stages")
        lines.extend(_table(["stage", "calls", "ok", "failed", "parse errors"], st_rows))
        if more:
            lines.append(more)
    return "\n".join(lines)
