"""The bench report: per-point figures, run metadata, text, and the files ``--out`` writes.

``--out DIR`` writes four files:

* ``requests.jsonl``: one line per request of every point (times in ms from the point's
  start; ``in_window`` says whether it counts in the figures);
* ``summary.json``: ``{"meta": ..., "points": [...], "search": ...}``;
* ``summary.csv``: one row per point, the headline figures flattened;
* ``report.html``: the same, with plots (:mod:`engine.bench.html`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import platform
import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..version import __version__
from .html import render_html
from .metrics import in_window, meets_slos, summarize
from .runner import PointResult
from .settings import BenchSettings

__all__ = (
    "machine",
    "point_summary",
    "render_bench",
    "request_rows",
    "timeline",
    "write_outputs",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """Where the client ran: CPU, cores, Python, platform, load average."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": load,
    }


def steady_rate(done_at: list[float], concurrency: int) -> float | None:
    """Completions per second in the middle of a closed-loop run, over whole waves.

    With C workers each waiting ~L per request, completions come in waves of C; the
    k-th and (k + m*C)-th completions sit at the same place in waves m cycles apart, so
    m*C / (t[k + m*C] - t[k]) is unbiased by where the waves fall. Starting at k = C
    leaves out the ramp-up and ending a wave before the last leaves out the drain.
    None for runs under 3 waves.
    """
    n = len(done_at)
    c = concurrency
    m = (n - 2 * c) // c
    if m < 1:
        return None
    span = done_at[c + m * c - 1] - done_at[c - 1]
    return m * c / span if span > 0 else None


def point_summary(settings: BenchSettings, res: PointResult) -> dict[str, Any]:
    """The figures of one load point (the keys of earlier versions are kept)."""
    recs = res.records
    ok = sum(1 for r in recs if r.ok)
    figures = summarize(
        recs,
        start=res.start,
        warmup_s=settings.warmup_s,
        cooldown_s=settings.cooldown_s,
        slos=settings.slos or None,
        slo_percentile=settings.slo_percentile,
    )
    wall = res.wall_s
    if settings.load == "closed" and res.concurrency:
        steady = steady_rate(
            sorted(r.end for r in recs if r.ok and r.end is not None), res.concurrency
        )
    else:
        steady = figures["completed_per_s"]
    out: dict[str, Any] = {
        "base_url": settings.base_url,
        "model": settings.model,
        "load": settings.load,
        "rate": res.rate,
        "concurrency": res.concurrency,
        "stream": settings.stream,
        "requests": len(recs),
        "ok": ok,
        "failed": len(recs) - ok,
        "errors": dict(sorted(res.errors.items())),
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 2) if wall > 0 else 0.0,
        "steady_requests_per_s": None if steady is None else round(steady, 2),
        **figures,
        "http_429": sum(r.http_429 for r in recs),
        "retries": res.retries,
        "cpu_s": round(res.cpu_s, 3),
        "cpu_us_per_request": round(res.cpu_s / max(1, len(recs)) * 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    if res.rate is not None and figures["send_rate_per_s"]:
        out["rate_error_pct"] = round((figures["send_rate_per_s"] / res.rate - 1.0) * 100.0, 3)
    sources = {r.tokens_source for r in recs if r.ok}
    out["output_tokens_from"] = sorted(sources)
    return out


def _ms(t: float | None, start: float) -> float | None:
    return None if t is None else round((t - start) * 1000.0, 3)


def request_rows(settings: BenchSettings, res: PointResult, point: int) -> list[dict[str, object]]:
    """The point's requests as JSON-ready rows (times in ms from the point's start)."""
    window = {
        id(r) for r in in_window(res.records, res.start, settings.warmup_s, settings.cooldown_s)
    }
    s = res.start
    rows = []
    for r in res.records:
        row: dict[str, object] = {
            "point": point,
            "request": r.index,
            "conversation": r.conversation,
            "turn": r.turn,
            "ok": r.ok,
            "intended_ms": _ms(r.intended, s),
            "sent_ms": _ms(r.sent, s),
            "first_token_ms": _ms(r.first_token, s),
            "last_token_ms": _ms(r.last_token, s),
            "end_ms": _ms(r.end, s),
            "schedule_lag_ms": None if r.lag is None else round(r.lag * 1000, 3),
            "latency_ms": None if r.latency is None else round(r.latency * 1000, 3),
            "latency_from_intended_ms": None
            if r.latency_intended is None
            else round(r.latency_intended * 1000, 3),
            "ttft_ms": None if r.ttft is None else round(r.ttft * 1000, 3),
            "tpot_ms": None if r.tpot is None else round(r.tpot * 1000, 3),
            "prompt_tokens": r.prompt_tokens,
            "output_tokens": r.output_tokens,
            "output_tokens_from": r.tokens_source,
            "finish_reason": r.finish_reason,
            "attempts": r.attempts,
            "http_429": r.http_429,
            "error": r.error,
            "status": r.status,
            "message": r.message,
            "in_window": id(r) in window,
            "chunks_ms": [round((c - s) * 1000, 3) for c in r.chunks],
        }
        if r.chunk_tokens is not None:
            row["chunk_tokens"] = r.chunk_tokens
        if settings.slos:
            row["meets_slos"] = meets_slos(r, settings.slos)
        rows.append(row)
    return rows


def timeline(res: PointResult, stream: bool) -> dict[str, list[tuple[float, float]]]:
    """Per request: (intended offset s, latency ms) series for the latency-over-time plot."""

    def series(attr: str) -> list[tuple[float, float]]:
        out = []
        for r in res.records:
            v = getattr(r, attr)
            if v is not None:
                out.append((r.intended - res.start, v * 1000.0))
        return out

    tl = {
        "latency from intended": series("latency_intended"),
        "latency from send": series("latency"),
    }
    if stream:
        tl["TTFT from send"] = series("ttft")
    return tl


def _flat(point: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for k, v in point.items():
        if isinstance(v, dict) and k not in ("errors", "window", "slo"):
            for q in ("p50", "p90", "p99", "mean"):
                if q in v:
                    row[f"{k}_{q}"] = v[q]
        elif not isinstance(v, dict | list):
            row[k] = v
    if point.get("slo"):
        row["slo_met"] = point["slo"]["met"]
    row["window_requests"] = point["window"]["requests"]
    return row


def summary_csv(points: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """One row per point, with the run's version, model, server and start time."""
    rows = [
        {
            "version": meta["version"],
            "started": meta["started"],
            "simulated": meta["simulated"],
            **_flat(p),
        }
        for p in points
    ]
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def build_meta(
    settings: BenchSettings,
    results: list[PointResult],
    started: dt.datetime,
    server: Mapping[str, object],
) -> dict[str, Any]:
    """The run's metadata: version, server, model, settings (no key), machine, client CPU."""
    s = {k: getattr(settings, k) for k in settings.__struct_fields__}
    return {
        "tool": "synth-engine bench",
        "version": __version__,
        "started": started.isoformat(timespec="seconds"),
        "base_url": settings.base_url,
        "model": settings.model,
        "simulated": any(r.simulated for r in results),
        "server": server,
        "settings": s,
        "machine": machine(),
        "client_cpu_s": round(sum(r.cpu_s for r in results), 3),
    }


def write_outputs(
    out: Path,
    report: dict[str, Any],
    rows: Sequence[Mapping[str, object]],
    timelines: list[dict[str, list[tuple[float, float]]]],
) -> list[Path]:
    """Write requests.jsonl, summary.json, summary.csv and report.html into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    p = out / "requests.jsonl"
    with p.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    paths.append(p)
    p = out / "summary.json"
    p.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    paths.append(p)
    p = out / "summary.csv"
    p.write_text(summary_csv(report["points"], report["meta"]))
    paths.append(p)
    p = out / "report.html"
    p.write_text(render_html(report, timelines))
    paths.append(p)
    return paths


def _n(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def _q(block: Mapping[str, object], *names: str) -> str:
    return "  ".join(f"{n} {_n(block.get(n))}" for n in names)


def render_bench(report: dict[str, Any]) -> str:
    """A human-readable rendering of a bench report (one point or a whole run)."""
    points = report["points"] if "points" in report else [report]
    meta = report.get("meta", {})
    lines = []
    if meta:
        sim = "  [SIMULATED ENDPOINT]" if meta.get("simulated") else ""
        lines.append(f"endpoint      {meta['base_url']}  model {meta['model']}{sim}")
    for p in points:
        where = (
            f"rate {p['rate']:g}/s ({p['load']})"
            if p.get("rate")
            else f"concurrency {p.get('concurrency')} ({p['load']})"
        )
        lines.append(f"point         {where}")
        lines.append(
            f"requests      {p['ok']} ok / {p['failed']} failed of {p['requests']} in {p['wall_s']} s"
            + (f"; window {p['window']['requests']}" if p["window"]["excluded"] else "")
        )
        rate = [f"{_n(p['requests_per_s'])} req/s overall"]
        if p.get("steady_requests_per_s") is not None:
            rate.append(f"{_n(p['steady_requests_per_s'])} req/s steady")
        if p.get("send_rate_per_s") is not None and p.get("rate"):
            rate.append(
                f"sent {_n(p['send_rate_per_s'])}/s ({p.get('rate_error_pct', 0):+.2f}% of target)"
            )
        if p.get("output_tokens_per_s") is not None:
            rate.append(f"{_n(p['output_tokens_per_s'])} output tokens/s")
        if p.get("goodput_per_s") is not None:
            rate.append(f"goodput {_n(p['goodput_per_s'])}/s")
        lines.append("throughput    " + ", ".join(rate))
        lines.append("latency ms    " + _q(p["latency_ms"], "p50", "p90", "p99", "p99.9", "mean"))
        lines.append(
            "  intended    " + _q(p["latency_from_intended_ms"], "p50", "p90", "p99", "p99.9")
        )
        lines.append("sched lag ms  " + _q(p["schedule_lag_ms"], "p50", "p99", "max"))
        if p["stream"]:
            lines.append("ttft ms       " + _q(p["ttft_ms"], "p50", "p90", "p99", "p99.9"))
            lines.append("tpot ms       " + _q(p["tpot_ms"], "p50", "p90", "p99"))
            lines.append("itl ms        " + _q(p["itl_ms"], "p50", "p90", "p99", "p99.9"))
        else:
            lines.append("ttft ms       - (use --stream for TTFT, TPOT and ITL)")
        if p.get("slo"):
            checks = ", ".join(
                f"{k} p{p['slo']['percentile']:g} {_n(c['value']) if c['value'] is not None else 'inf'} <= {c['limit']:g}: {'yes' if c['met'] else 'NO'}"
                for k, c in p["slo"]["checks"].items()
            )
            lines.append(f"SLOs          {'met' if p['slo']['met'] else 'not met'} ({checks})")
        lines.append(f"429s          {p['http_429']}  retries {p['retries']}")
        lines.append(
            f"client CPU    {p['cpu_s']} s, {p['cpu_us_per_request']} us/request; peak RSS {p['peak_rss_mb']} MB"
        )
        if p.get("errors"):
            lines.append("errors        " + ", ".join(f"{k} {v}" for k, v in p["errors"].items()))
    search = report.get("search")
    if search:
        best = search.get("best_rate")
        lines.append(
            "search        "
            + (
                f"highest rate meeting the SLOs: {best:g} req/s"
                if best is not None
                else "no rate tried met the SLOs"
            )
            + " (tried "
            + ", ".join(f"{t['rate']:g}" for t in search["tried"])
            + ")"
        )
    return "\n".join(lines)
